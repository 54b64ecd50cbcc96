"""The ``optim.network`` kind's measures on hand-made runs (values computed by hand)."""

from types import SimpleNamespace

import numpy as np
import pytest

from eoslab.errors import MeasureError
from eoslab.experiments.kinds import optim_network as k


def _run(lam, bs=None, batch_size=8, lr=0.5, every=2):
    steps = len(lam)
    tracked = np.arange(steps) % every == 0
    arrays = {"loss": np.ones(steps), "tracked": tracked, "diverged": np.zeros(steps, bool),
              "hessian_eigs": np.asarray(lam, float)[:, None], "edge": np.full(steps, 2 / lr),
              "edge_ratio": np.asarray(lam, float) * lr / 2}
    if bs is not None:
        arrays["batch_sharpness"] = np.where(tracked, bs, np.nan)
        arrays["batch_sharpness_se"] = np.where(tracked, 0.1, np.nan)
    params = {"lr": lr, "batch_size": batch_size, "onset": 0.95}
    return SimpleNamespace(id=f"b{batch_size}", arrays=arrays, params=params)


def test_sgd_measures_by_hand():
    # 2/η = 4; tracked steps 0, 2, 4, 6; second half = steps 4, 6
    small = _run([1.0, 9, 2.0, 9, 2.4, 9, 2.8, 9], bs=np.array([0.8, 0, 2, 0, 3.6, 0, 4.4, 0]))
    large = _run([1.0, 9, 3.0, 9, 3.2, 9, 3.6, 9], bs=np.zeros(8), batch_size=32)
    m = k.batch_sharpness_ratio([small])
    assert m.value == pytest.approx((0.9 + 1.1) / 2) and m.uncertainty == pytest.approx(0.1)
    assert k.full_sharpness_late_max([small]).value == pytest.approx(2.8 / 4)
    init = k.initial_batch_sharpness_ratio([small])
    assert (init.value, init.uncertainty) == pytest.approx((0.2, 0.025))
    slope = k.full_sharpness_batch_slope([large, small])  # order of the runs does not matter
    assert slope.value == pytest.approx((3.4 - 2.6) / 4)
    with pytest.raises(MeasureError):
        k.full_sharpness_batch_slope([small])


def test_eos_phase_mean_starts_at_the_onset():
    # edge ratio at tracked steps 0, 2, 4, 6, 8: 0.5, 0.96, 0.8, 1.0, 1.02 (onset 0.95 at step 2)
    r = _run(np.array([0.5, 0, 0.96, 0, 0.8, 0, 1.0, 0, 1.02, 0]) * 4)
    m = k.eos_mean_ratio([r])
    v = np.array([0.96, 0.8, 1.0, 1.02])
    assert m.value == pytest.approx(v.mean()) and m.uncertainty == pytest.approx(v.std() / 2)
