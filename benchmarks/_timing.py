"""Timing helper shared by the benchmarks (run as scripts: ``python benchmarks/<name>.py``)."""
import time


def timed(fn, repeats: int = 1, warmup: bool = False) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()``, each the minimum over ``repeats`` calls; CPU time is
    this process's (on a shared machine the wall time also counts other processes). ``warmup``:
    one untimed call first (compilation excluded)."""
    if warmup:
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)
