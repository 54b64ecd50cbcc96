"""Progress inside vectorised runs: the batched second-order stepper and the 2-D phase runs are
split into chunks of steps (progress reported after each), and the numbers are bit-identical
to one scan."""

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress
from eoslab.dynamics import highdim as hd
from eoslab.models import quadratic2d, second_order


class Recorder:
    """A progress reporter that keeps every (description, completed) update."""

    def __init__(self):
        self.tasks, self.updates = [], []

    def start(self, description, total, unit):
        self.tasks.append((description, total, unit))
        return len(self.tasks) - 1

    def update(self, handle, completed, info=""):
        self.updates.append((self.tasks[handle][0], completed))

    def stop(self, handle, ok=True):
        pass


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_batched_gd_output_in_chunks_is_bit_identical_and_reports_each_chunk():
    m = second_order.random(jax.random.PRNGKey(3), 5, 6, 1.0, 0.6, 0.3)
    lrs = [0.4, 1.2, 60.0]  # the last one diverges: its frozen state must carry over chunk borders
    kw = dict(hessian_every=4, record_nonlinear=True)
    one, (z1, J1) = hd.batched_gd_output(m, lrs, 25, chunks=1, **kw)
    rec = Recorder()
    with progress.reporting(rec):
        four, (z4, J4) = hd.batched_gd_output(m, lrs, 25, chunks=4, **kw)
    _same(one, four)
    np.testing.assert_array_equal(z1, z4)
    np.testing.assert_array_equal(J1, J4)
    assert one["loss"].shape == (3, 25) and bool(one["diverged"][2, -1]) and not bool(one["diverged"][0, -1])
    assert [c for _, c in rec.updates] == [7, 14, 21, 25]  # ⌈25/4⌉ = 7 steps per chunk, the surplus inactive


def test_sweep_highdim_reports_models_and_steps():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    rec = Recorder()
    with progress.reporting(rec):
        traj = hd.sweep_highdim(keys, [0.5, 1.0], 120, D=4, P=5, sigma_z=1.0, sigma_j=0.6, sigma_q=0.3)
    assert traj["loss"].shape == (2, 2, 120)
    models = [c for d, c in rec.updates if d.startswith("random second-order models")]
    steps = [c for d, c in rec.updates if d.startswith("GD on a second-order model")]
    assert models == [1, 2]
    assert len(steps) == 2 * hd.PROGRESS_CHUNKS and steps[-1] == 120  # a listener: chunks within each model
    # the same numbers as the model run on its own (chunks vs one scan: the test above)
    m = second_order.random(keys[1], 4, 5, 1.0, 0.6, 0.3)
    _same({k: v[1] for k, v in traj.items()}, hd.batched_gd_output(m, [0.5, 1.0], 120, chunks=10)[0])


def test_phase_runs_in_chunks_are_bit_identical():
    from eoslab.experiments.kinds.quadratic2d import _chunk_lengths, _phase_batch, _phase_inits

    assert _chunk_lengths(203, 4) == [50, 50, 50, 50, 3] and _chunk_lengths(3000, 10) == [300] * 10
    eps, lr = 0.1, 4.0
    th0 = jnp.asarray(_phase_inits({"b_min": 0.05, "b_max": 3.5, "n_b": 8, "inits_per_b": 2, "theta1_max": 0.3,
                                    "seed": 0, "eps": eps}))
    prob = quadratic2d.problem(eps, [0.0, 0.0])
    one = [np.asarray(x) for x in _phase_batch(prob, lr, th0, 203, chunks=1)]
    rec = Recorder()
    with progress.reporting(rec):
        five = [np.asarray(x) for x in _phase_batch(prob, lr, th0, 203, chunks=4)]
    for a, b in zip(one, five):
        np.testing.assert_array_equal(a, b)
    ratio, div, div_at, _ = one
    assert div.any() and (~div).any() and (ratio[~div] > 0.9).any()  # diverged, EoS and below all occur
    assert (div_at[div] >= 0).all() and (div_at[~div] == -1).all()
    assert [c for _, c in rec.updates] == [50, 100, 150, 200, 203]
