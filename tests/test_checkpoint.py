"""Checkpoints and resume of ``train``: a run interrupted after a checkpoint and resumed is
bit-identical (every per-step array and the final parameters) to an uninterrupted one, spectra
tracked, for GD and for Adam; a checkpoint of another training is refused in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import Problem
from eoslab.dynamics import optim
from eoslab.dynamics.train import train
from eoslab.errors import EoslabError
from eoslab.partial import PartialFolder


def _problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(k1, (16, 3), jnp.float32)
    params = {"w1": jax.random.normal(k2, (3, 6), jnp.float32) / 1.5,
              "w2": jax.random.normal(k3, (6, 1), jnp.float32) / 2.5}
    return Problem.from_model(lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"], params, x, jnp.sin(2 * x[:, :1]),
                              loss="mse")


STEPS, CHUNK = 24, 6
KW = dict(steps=STEPS, chunk=CHUNK, k=1, track=("hessian",))


# GD's interrupted-and-resumed training is also checked bit for bit through the CLI, in the default
# suite (tests/test_train_runs.py); here it runs with -m slow (one more compilation of a tracked train)
@pytest.mark.parametrize("name", [pytest.param("gd", marks=pytest.mark.slow), "adam"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, name):
    problem = _problem()
    opt = optim.gd(0.8) if name == "gd" else optim.adam(0.02)
    ref, p_ref = train(problem, optimizer=opt, **KW)
    assert np.all(ref["tracked"]) and np.all(np.isfinite(ref["hessian_eigs"]))
    if name == "adam":
        assert np.all(np.isfinite(ref["preconditioned_eigs"]))  # the preconditioned tracker's state is resumed too

    def interrupt(t, record):  # Ctrl-C in the middle of the chunk of steps 12 … 17
        if t == 15:
            raise KeyboardInterrupt

    folder = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        train(problem, optimizer=opt, checkpoint=folder, checkpoint_every=8, callback=interrupt, **KW)
    # checkpoint_every 8 falls on the chunk boundary 12: the last checkpoint before the interrupt
    part = PartialFolder(folder)
    assert part.read_progress()["done"] == 12 and part.read_progress()["total"] == STEPS
    assert part.read_arrays()["loss"].shape == (12,)
    np.testing.assert_array_equal(part.read_arrays()["loss"], ref["loss"][:12])
    seen = []
    out, p_out = train(problem, optimizer=opt, checkpoint=folder, resume=True,
                       callback=lambda t, r: seen.append(t), **KW)
    assert out.meta["resumed_from"] == 12 and seen == list(range(12, STEPS))
    assert sorted(out) == sorted(ref)
    for key in ref:
        assert out[key].dtype == ref[key].dtype and np.array_equal(out[key], ref[key], equal_nan=True), key
    for a, b in zip(jax.tree_util.tree_leaves(p_ref), jax.tree_util.tree_leaves(p_out)):
        assert a.dtype == b.dtype == jnp.float32 and np.array_equal(a, b)
    # the finished run's last checkpoint: resuming it again recomputes nothing
    assert part.read_progress()["done"] == STEPS
    again, p_again = train(problem, optimizer=opt, checkpoint=folder, resume=True, **KW)
    assert again.meta["resumed_from"] == STEPS and np.array_equal(again["loss"], ref["loss"])
    # a checkpoint of another training is refused, in one line naming what differs
    other = optim.gd(0.7) if name == "gd" else optim.adam(0.03)
    with pytest.raises(EoslabError) as e:
        train(problem, optimizer=other, checkpoint=folder, resume=True, **KW)
    assert "different training" in str(e.value) and "hyper" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EoslabError, match="differs in: .*steps"):
        train(problem, optimizer=opt, checkpoint=folder, resume=True, **{**KW, "steps": STEPS + 6})


def test_checkpoint_refusals(tmp_path):
    problem = _problem()
    with pytest.raises(EoslabError, match="nothing to resume"):
        train(problem, 0.5, checkpoint=tmp_path / "none", resume=True, **KW)
    with pytest.raises(EoslabError, match="need checkpoint"):
        train(problem, 0.5, resume=True, **KW)
    with pytest.raises(EoslabError, match="checkpoint_every"):
        train(problem, 0.5, checkpoint=tmp_path / "a", checkpoint_every=0, **KW)
    with pytest.raises(EoslabError, match="checkpoint must be"):
        train(problem, 0.5, checkpoint=42, **KW)
    # a folder that holds something else is not taken for a checkpoint
    PartialFolder(tmp_path / "b").update({"loss": np.zeros(2)}, 2, 2, checkpoint={"x": np.ones(1)})
    with pytest.raises(EoslabError, match="not a training checkpoint"):
        train(problem, 0.5, checkpoint=tmp_path / "b", resume=True, **KW)
