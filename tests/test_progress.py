"""Progress reporting: silent without a listener, plain lines in a log, and the numbers of a
computation unchanged when it is split into blocks to report progress."""

import io

import jax
import numpy as np

from eoslab import progress


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, description, total, unit):
        self.events.append(("start", description, total, unit))
        return len(self.events)

    def update(self, handle, completed, info=""):
        self.events.append(("update", handle, completed))

    def stop(self, handle, ok=True):
        self.events.append(("stop", handle, ok))


def test_silent_without_a_reporter():
    assert not progress.active()
    with progress.task("x", 3) as t:
        t.advance(2)
        assert t.completed == 2


def test_plain_reporter_lines_and_a_stopped_task():
    buf = io.StringIO()
    r = progress.PlainReporter(buf, every=0.0)
    with progress.reporting(r):
        assert progress.active()
        with progress.task("GD", 10, "steps") as t:
            t.update(5)
        try:
            with progress.task("training", 4, "steps") as t:
                t.update(1)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("GD: 5/10 steps (50%)") and "ETA" in lines[0]
    assert lines[1].startswith("GD: 5/10 steps") and lines[1].endswith("done")
    assert lines[-1].endswith("stopped")


def test_blocks_for_progress_give_the_same_numbers():
    from eoslab.theory import theorem2

    key = jax.random.PRNGKey(3)
    plain = theorem2.sample_moments(key, 6, 5, samples=45)
    rec = Recorder()
    with progress.reporting(rec):
        reported = theorem2.sample_moments(key, 6, 5, samples=45)
    for a, b in zip(plain, reported):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0)
    updates = [e[2] for e in rec.events if e[0] == "update"]
    assert len(updates) > 5 and updates[-1] == 45 and updates == sorted(updates)


def test_rich_reporter_with_an_unknown_total_then_a_known_one():
    from rich.console import Console

    buf = io.StringIO()
    r = progress.RichReporter(Console(file=buf, force_terminal=True, width=100))
    with progress.reporting(r):
        with progress.task("experiment", None, "runs") as t:
            t.update(0)
            with progress.task("training", 10, "steps") as u:
                u.update(5, info="loss 1")
                r.progress.refresh()  # render now (the live display otherwise refreshes on a timer)
            t.update(2, total=3)
            r.progress.refresh()
    out = buf.getvalue()
    assert "0/?" in out and "5/10" in out and "2/3" in out
