"""The runner: plan the runs of an experiment, compute the missing ones, collect the results.

Executors. Runs are computed in-process, a chunk of runs per vectorised call of the kind's
``run``. For a cluster, :class:`Shard` splits the work into N disjoint parts by run id:
N jobs of a job array each run ``eoslab reproduce --shard i/N --runs SHARED_ROOT`` against one
shared results root (no coordination is needed: runs are written atomically and identified by
the hash of their config), then one ``eoslab report --runs SHARED_ROOT`` (or a plain
``reproduce``, which finds every run done) assembles the figures and the report.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, ClassVar, Iterable

from eoslab._precision import x64
from eoslab.errors import EoslabError
from eoslab.experiments.registry import Kind, get_kind
from eoslab.experiments.schema import Experiment, load_config, matches
from eoslab.experiments.store import Run, Store, run_config, run_id, utc_now


BUILTIN_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The papers' experiment configs, shipped inside the package (package data)."""


def config_dirs(config_dir: str | Path | None = None, builtin: bool = True) -> list[Path]:
    """The config folders read, lowest precedence first: the shipped configs (``builtin``), then
    the user's folder: ``config_dir`` if given, else ``./experiments`` if it exists. A user's
    config adds an experiment or, under the same ``[experiment] name``, replaces the shipped one."""
    out = [BUILTIN_CONFIGS] if builtin else []
    if config_dir is not None:
        d = Path(config_dir)
        if not d.is_dir():
            raise EoslabError(f"--configs: config folder {d} does not exist")
        out.append(d)
    elif Path("experiments").is_dir():
        out.append(Path("experiments"))
    return [d for i, d in enumerate(out) if d.resolve() not in {e.resolve() for e in out[:i]}]


def _declared_name(path: Path) -> str | None:
    """The ``[experiment] name`` of a config, without validating the rest (None if unreadable)."""
    import tomllib

    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("experiment", {}).get("name")
    except (OSError, ValueError, AttributeError):  # ValueError: TOML or UTF-8 decoding
        return None
    return name if isinstance(name, str) else None


def load_experiments(config_dir: str | Path | None = None, only: Iterable[str] = (),
                     builtin: bool | None = None) -> list[Experiment]:
    """Every ``*.toml`` config of :func:`config_dirs`, validated, sorted by file name; a user's
    config replaces a shipped one of the same experiment name. ``builtin`` (default: only when
    no ``config_dir`` is given) includes the shipped configs; the CLI always includes them.
    With ``only``, just the named experiments are validated and returned (unknown names are an
    error), so one broken config does not block the others."""
    if builtin is None:
        builtin = config_dir is None
    dirs = config_dirs(config_dir, builtin)
    chosen: dict[str, Path] = {}      # experiment name (or file stem if unreadable) -> config
    for d in dirs:
        paths = sorted(d.glob("*.toml"))
        declared = [_declared_name(p) or f"<{p.name}>" for p in paths]
        dup = sorted({n for n in declared if declared.count(n) > 1})
        if dup:
            raise EoslabError(f"experiment names used twice in {d}: {', '.join(dup)}")
        chosen.update(zip(declared, paths))
    only = list(only)
    if only:
        unknown = [n for n in only if n not in chosen]
        if unknown:
            known = ", ".join(sorted(n for n in chosen if not n.startswith("<")))
            raise EoslabError(f"unknown experiment(s) {', '.join(unknown)}; known: {known}")
        chosen = {n: p for n, p in chosen.items() if n in only}
    exps = [load_config(p) for p in sorted(chosen.values(), key=lambda p: (p.name, str(p)))]
    names = [e.name for e in exps]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise EoslabError(f"experiment names used twice: {', '.join(sorted(dup))}")
    return exps


@dataclasses.dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``: the runs whose id, as an integer, is ``index``
    mod ``count``. Stable: a run belongs to the same shard whatever else is done."""

    index: int = 0
    count: int = 1
    #: More shards than machines anyone runs at once is a typo (and shard i would own no run).
    MAX_COUNT: ClassVar[int] = 100_000

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        if text is None:
            return cls()
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise EoslabError(f"--shard must look like i/N (e.g. 0/8), got {text!r}") from None
        if not (1 <= n <= cls.MAX_COUNT and 0 <= i < n):
            raise EoslabError(f"--shard i/N needs 1 ≤ N ≤ {cls.MAX_COUNT:,} and 0 ≤ i < N, got {text!r}")
        return cls(i, n)

    def owns(self, rid: str) -> bool:
        return int(rid, 16) % self.count == self.index


@dataclasses.dataclass
class PlannedRun:
    point: dict           # flat parameters + seed
    config: dict          # the resolved run config (identity)
    rid: str
    run: Run | None = None


@dataclasses.dataclass
class ExperimentResults:
    """The runs of one experiment in one mode, in sweep order; what measures and figures see."""

    experiment: Experiment
    kind: Kind
    mode: str
    runs: list[Run]
    swept: list[str]

    def select(self, **where) -> list[Run]:
        """Runs whose parameters equal every ``where`` value (e.g. ``eps=0.02``)."""
        return [r for r in self.runs if matches(r.params, where)]

    def values(self, name: str) -> list:
        """The distinct values of parameter ``name`` over the runs, in order of appearance."""
        out = []
        for r in self.runs:
            if r.params[name] not in out:
                out.append(r.params[name])
        return out


def plan(exp: Experiment, mode: str, store: Store, repair: bool = False) -> list[PlannedRun]:
    """The runs of ``exp`` in ``mode`` with the valid stored ones attached (invalid ones count
    as missing). Read-only unless ``repair`` (the executor, which recomputes what is missing):
    then invalid runs are quarantined and dead processes' temporary folders removed."""
    if repair:
        store.clean_stale_tmp(exp.name)
    version = get_kind(exp.kind).version
    out = []
    for p in exp.points(mode):
        cfg = run_config(exp.name, exp.kind, p, version)
        rid = run_id(cfg)
        out.append(PlannedRun(p, cfg, rid, store.read(store.run_dir(exp.name, rid), repair=repair)))
    return out


def chunks(kind: Kind, todo: list[PlannedRun]) -> list[list[PlannedRun]]:
    """``todo`` in chunks of at most ``kind.chunk`` runs with equal static parameters (one
    vectorised call of the kind each), in order."""
    groups: dict[str, list[PlannedRun]] = {}
    for pr in todo:
        key = repr([pr.point[k] for k in kind.static])
        groups.setdefault(key, []).append(pr)
    out = []
    for g in groups.values():
        out += [g[i:i + kind.chunk] for i in range(0, len(g), kind.chunk)]
    return out


def check_points(exp: Experiment, kind: Kind, points: list[dict]) -> None:
    """Refuse, before any run is computed, a point the kind's ``check_point`` rejects."""
    if kind.check_point is None:
        return
    for p in points:
        msg = kind.check_point(p)
        if msg:
            axes = ", ".join(f"{a} = {p[a]!r}" for a in exp.sweep if a in p)
            raise EoslabError(f"{exp.path}: {msg}" + (f" (at {axes})" if axes else ""))


def pending(exp: Experiment, mode: str, store: Store, shard: Shard,
            on_progress: Callable[[int, int], None] | None = None):
    """``(kind, plan, todo, done, total)``: the plan of ``exp`` (invalid runs quarantined), the
    missing runs ``shard`` owns (their points checked by the kind), the runs already stored and
    done + todo; ``on_progress(done, total)`` is told once."""
    kind = get_kind(exp.kind)
    planned = plan(exp, mode, store, repair=True)
    todo = [pr for pr in planned if pr.run is None and shard.owns(pr.rid)]
    check_points(exp, kind, [pr.point for pr in todo])
    done = sum(pr.run is not None for pr in planned)
    total = done + len(todo)
    if on_progress:
        on_progress(done, total)
    return kind, planned, todo, done, total


def execute(exp: Experiment, mode: str, store: Store, shard: Shard = Shard(),
            on_progress: Callable[[int, int], None] | None = None) -> list[PlannedRun]:
    """Compute the missing runs of ``exp`` owned by ``shard``, writing each atomically as soon
    as its chunk is done (an interruption loses at most the chunk in flight).
    ``on_progress(done, total)`` is called after each chunk. Returns the plan, with every
    run this process completed attached."""
    kind, planned, todo, done, total = pending(exp, mode, store, shard, on_progress)
    for chunk in chunks(kind, todo):
        t0, started = time.perf_counter(), utc_now()
        with x64():  # the reproduction computes in float64 (float32 networks keep float32)
            results = kind.run([dict(pr.point) for pr in chunk])
        if len(results) != len(chunk):
            raise EoslabError(f"kind {kind.name}: run returned {len(results)} results for {len(chunk)} points")
        wall = time.perf_counter() - t0
        for pr, arrays in zip(chunk, results):
            meta = {"experiment": exp.name, "kind": kind.name, "mode": mode, "seed": pr.point["seed"],
                    "wall_s": wall / len(chunk), "chunk_wall_s": wall, "chunk_size": len(chunk),
                    "started_utc": started, "config_file": str(exp.path)}
            path = _store_or_rescue(store, pr.config, arrays, meta)
            pr.run = store.read(path)
        done += len(chunk)
        if on_progress:
            on_progress(done, total)
    return planned


def _store_or_rescue(store: Store, config: dict, arrays: dict, meta: dict) -> Path:
    """``store.write``; if the results root fails (disk full, permissions changed mid-run), the
    computed run is written to a rescue root in the temporary folder and the error says where."""
    try:
        return store.write(config, arrays, meta)
    except OSError as e:
        import tempfile

        rescue = Store(Path(tempfile.gettempdir()) / f"eoslab-runs-rescued-{os.getpid()}")
        try:
            kept = rescue.write(config, arrays, meta)
            where = f"this run was kept in {kept}"
        except OSError:
            where = "it could not be kept elsewhere either"
        raise EoslabError(f"cannot write run {run_id(config)} under {store.root} ({e.strerror or e}); "
                          f"{where}; the runs stored before are intact") from None


def missing_runs(exps, mode: str, store: Store) -> list[tuple[str, int, int]]:
    """``(experiment, missing, planned)`` for every experiment with runs missing in ``mode``."""
    out = []
    for e in exps:
        planned = plan(e, mode, store)
        n = sum(pr.run is None for pr in planned)
        if n:
            out.append((e.name, n, len(planned)))
    return out


def check_complete(exps, mode: str, store: Store) -> None:
    """One error naming every experiment whose runs are incomplete (none: returns)."""
    gaps = missing_runs(exps, mode, store)
    if gaps:
        what = ", ".join(f"{name} ({n} of {total})" for name, n, total in gaps)
        names = ",".join(name for name, _, _ in gaps)
        raise EoslabError(f"runs are missing under {store.root} ({mode}): {what}; run `eoslab reproduce --{mode} "
                          f"--runs {store.root} --only {names}`")


def collect(exp: Experiment, mode: str, store: Store) -> ExperimentResults:
    """The results of ``exp`` in ``mode``; an error listing what is missing if incomplete."""
    planned = plan(exp, mode, store)
    missing = [pr for pr in planned if pr.run is None]
    if missing:
        raise EoslabError(f"experiment {exp.name} ({mode}): {len(missing)} of {len(planned)} runs are missing "
                          f"under {store.root} (run `eoslab reproduce --{mode} --only {exp.name}`)")
    return ExperimentResults(exp, get_kind(exp.kind), mode, [pr.run for pr in planned], exp.swept(mode))
