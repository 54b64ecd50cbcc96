"""Batched output-space GD on random second-order models, the onset detector, the non-linear term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eoslab
from eoslab.dynamics import gd_output
from eoslab.dynamics import highdim as hd
from eoslab.models import second_order


def _model(seed=0, D=12, P=10, sigma_z=1.0):
    sj, sq = hd.natural_scales(D, P)
    return second_order.random(jax.random.PRNGKey(seed), D, P, sigma_z, sj, sq)


def test_batched_step_equals_single_output_step():
    from eoslab.dynamics import output_step

    m = _model()
    lrs = jnp.array([0.3, 0.9, 1.4])
    z = jnp.stack([m.y * (1 + i) for i in range(3)])
    J = jnp.stack([m.G.T * (1 - 0.1 * i) for i in range(3)])
    got = hd.batched_output_step(z, J, m.Q, lrs, m.normaliser)
    for b in range(3):
        ref = output_step(z[b], J[b], m.Q, lrs[b], m.normaliser)
        for x, y in zip(got, ref):
            np.testing.assert_allclose(x[b], y, rtol=1e-13, atol=1e-15)


def test_batched_sweep_equals_per_run_loop():
    m = _model()
    lrs = jnp.array([0.4, 0.8, 1.1])
    steps = 60
    tr, (zf, Jf) = hd.batched_gd_output(m, lrs, steps, ntk="dense", hessian_every=1, hessian_iters=10)
    for b, lr in enumerate(lrs):
        ref, (z1, J1) = gd_output(m, lr, steps, spectra="dense")
        # One matmul for the batch vs one matvec per run: same maths, different summation
        # order, so equality is to rounding (amplified by ≤ 60 steps of the dynamics).
        np.testing.assert_allclose(tr["loss"][b], ref["loss"], rtol=1e-10)
        np.testing.assert_allclose(tr["ntk_eigs"][b], ref["ntk_eigs"], rtol=1e-10)
        np.testing.assert_allclose(tr["hessian_eigs"][b, :, 0], ref["hessian_eigs"][:, 0], rtol=1e-8)
        np.testing.assert_allclose(zf[b], z1, rtol=1e-9, atol=1e-12)
    # And a batch equals its own slices run alone, bit for bit up to rounding.
    solo, _ = hd.batched_gd_output(m, lrs[1:2], steps, ntk="dense")
    np.testing.assert_allclose(tr["loss"][1], solo["loss"][0], rtol=1e-12)
    # Lanczos NTK (warm-started) agrees with dense eigenvalues.
    lz, _ = hd.batched_gd_output(m, lrs, steps, ntk="lanczos", lanczos_iters=12)
    np.testing.assert_allclose(lz["ntk_eigs"], tr["ntk_eigs"], rtol=1e-8)


def test_divergence_is_per_run():
    m = _model(sigma_z=1.0)
    lrs = jnp.array([0.5, 40.0])
    tr, _ = hd.batched_gd_output(m, lrs, 40, ntk="none")
    ok, _ = hd.batched_gd_output(m, lrs[:1], 40, ntk="none")
    assert bool(tr["diverged"][1, -1]) and not bool(tr["diverged"][0, -1])
    np.testing.assert_allclose(tr["loss"][0], ok["loss"][0], rtol=1e-12)
    first = int(np.argmax(tr["diverged"][1]))
    assert np.all(np.isnan(tr["loss"][1, first:])) and np.all(np.isfinite(tr["loss"][1, :first]))
    rows = hd.summarize(tr, lrs, tail=10)
    assert [r["outcome"] for r in rows][1] == "diverged" and rows[1]["diverged_at"] == first


def test_onset_detector_on_constructed_trajectory():
    x = np.concatenate([np.linspace(0.2, 0.94, 50), [0.9499, 0.95, 1.1, 0.7], np.full(10, 1.0)])
    assert int(hd.onset_step(x)) == 51
    assert int(hd.onset_step(x, threshold=1.05)) == 52
    assert int(hd.onset_step(np.full(20, 0.5))) == -1
    x2 = x.copy()
    x2[:60] = np.nan  # NaN rows (diverged / not computed) never count
    assert int(hd.onset_step(x2)) == 60
    batch = np.stack([x, np.full_like(x, 0.3)])
    np.testing.assert_array_equal(hd.onset_step(batch), [51, -1])


def test_summary_and_outcomes_on_constructed_trajectory():
    steps = 300
    t = np.arange(steps)
    eh = np.stack([np.minimum(0.3 + t / 100, 1.0) + 0.02 * (-1) ** t,  # sharpens to the edge, stays
                   np.full(steps, 0.4),                                  # never reaches it
                   np.where(t < 100, 0.3 + t / 100, 0.6)])               # touches it, relaxes
    lrs = np.array([1.0, 1.0, 2.0])
    traj = {"eta_ntk_half": eh, "ntk_eigs": np.stack([2 * eh / lrs[:, None], eh / lrs[:, None]], -1),
            "loss": np.exp(-t / 50.0)[None].repeat(3, 0), "diverged": np.zeros((3, steps), bool)}
    rows = hd.summarize(traj, lrs, tail=100)
    assert [r["outcome"] for r in rows] == ["eos", "converged", "converged"]
    assert rows[0]["onset_ntk"] == int(np.argmax(eh[0] >= 0.95)) and rows[1]["onset_ntk"] == -1
    np.testing.assert_allclose(rows[0]["final_eta_ntk_half"], 1.0, atol=1e-12)
    np.testing.assert_allclose(rows[0]["mean_eta_ntk_half_after_onset"], eh[0, rows[0]["onset_ntk"]:].mean())
    np.testing.assert_allclose(rows[2]["eta_ntk2_half"], 0.6 / 2 / 2 * 2, rtol=1e-12)


def test_smoothed_ratio_and_events_on_constructed_signal():
    n = np.array([1.0, 3.0, 2.0, 2.0])
    l = np.array([1.0, 1.0, 2.0, 4.0])
    r = hd.smoothed_ratio(n, l, window=2)
    np.testing.assert_allclose(r, [1.0, np.sqrt(10 / 2), np.sqrt(13 / 5), np.sqrt(8 / 20)])
    t = np.arange(400)
    eh = np.where(t < 300, 0.5 + t / 300, 1.4 - (t - 300) / 50)     # edge at ~135, falls after 300
    lin = np.ones(400)
    nl = np.where(t < 280, 0.01, 0.01 * 1.3 ** (t - 280))           # grows from step 280
    ev = hd.nonlinear_events(eh, nl, lin)
    assert ev["onset"] == int(np.argmax(eh >= 0.95))
    assert ev["peak"] == 299 and 300 <= ev["fall"] <= 302
    assert 280 < ev["grow"] < ev["fall"] and ev["ok"]
    np.testing.assert_allclose(ev["sharpening_ratio"], 0.01)


def test_nonlinear_contribution_small_while_sharpening_grows_before_fall():
    # A seeded run (D = P = 40): sharpening to the edge, then the top eigenvalue falls back.
    m = _model(seed=1, D=40, P=40)
    tr, _ = hd.batched_gd_output(m, [1.2], 200, record_nonlinear=True, lanczos_iters=20)
    one = {k: np.asarray(v[0]) for k, v in tr.items()}
    ev = hd.nonlinear_events(one["eta_ntk_half"], one["nonlinear_norm"], one["linear_norm"])
    assert ev["onset"] > 0 and ev["fall"] > ev["onset"], ev
    assert ev["ok"], ev
    assert ev["sharpening_ratio"] < 0.1 and ev["ratio_at_fall"] > 2 * ev["sharpening_ratio"], ev
    # The recorded terms are the exact decomposition of the z update.
    np.testing.assert_array_less(0.0, one["nonlinear_norm"][:10])


def test_bad_input():
    m = _model()
    with pytest.raises(eoslab.EoslabError):
        hd.batched_gd_output(m, [0.1], 10, ntk="qr")
    with pytest.raises(eoslab.EoslabError):
        hd.batched_gd_output(m, [-0.1], 10)
    with pytest.raises(eoslab.EoslabError):
        hd.batched_gd_output(m, [0.1], 10, ntk="dense", record_nonlinear=True)


def test_step_size_check_fires_under_jit():
    """Concrete step sizes are refused at once; traced ones (a caller's jit) when the program
    runs, instead of the check switching off."""
    from eoslab.errors import EoslabError

    m = _model(D=3, P=4)
    with pytest.raises(EoslabError, match="finite and positive"):
        hd.batched_gd_output(m, jnp.array([0.1, -0.1]), 3, ntk="dense")
    run = jax.jit(lambda lrs: hd.batched_gd_output(m, lrs, 3, ntk="dense")[0]["loss"])
    assert np.all(np.isfinite(np.asarray(run(jnp.array([0.1, 0.2])))))
    with pytest.raises(Exception, match="finite and positive"):
        jax.block_until_ready(run(jnp.array([0.1, -0.1])))
