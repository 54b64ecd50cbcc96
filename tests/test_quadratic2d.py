"""Dynamics of the 2-D model: the exact (z, λ) map vs parameter-space GD, output-space vs
parameter-space GD over 1,000 steps, batched simulation (divergence, determinism, scaling)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab.dynamics import gd, gd_output
from eoslab.models import quadratic2d, second_order
from eoslab.dynamics import quadratic2d as q2d

STEPS = 1000


def _rel_close(a, b, rtol=1e-10):
    """Agreement relative to the trajectory's scale (the loss → 0, so pointwise relative
    errors of late, tiny residuals are meaningless)."""
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.max(np.abs(a)))


@pytest.mark.parametrize("eps,lr,E,theta0", [
    (0.05, 1.0, 0.0, (0.1, 2 / math.sqrt(0.05))),   # sharpens through the edge, settles at EoS
    (0.1, 0.7, 0.2, (0.3, 1.5)),                    # target E ≠ 0
])
def test_zl_map_equals_parameter_space_gd(eps, lr, E, theta0):
    tr, _ = gd(quadratic2d.problem(eps, theta0, E), lr, STEPS, spectra="none", record_params=True)
    z_ref = quadratic2d.output(tr["params"], eps) - E
    lam_ref = quadratic2d.ntk(tr["params"], eps)
    z0, lam0 = q2d.from_theta(jnp.asarray(theta0), eps, E)
    z, lam = q2d.iterate(z0, lam0, eps, lr, STEPS, E)
    _rel_close(z[:-1], z_ref)
    _rel_close(lam[:-1], lam_ref)
    if eps == 0.05:
        assert float(jnp.max(lr * lam)) > 2  # the run does cross the edge
    z2, lam2 = q2d.iterate(z0, lam0, eps, lr, STEPS // 2, E, two=True)
    _rel_close(z2[:-1], z_ref[::2])
    _rel_close(lam2[:-1], lam_ref[::2])


def _random_model(seed, D=6, P=9):
    m = second_order.random(jax.random.PRNGKey(seed), D, P)
    return second_order.SecondOrder(m.y, m.G, m.Q, 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 7), (P,)))


@pytest.mark.parametrize("case", ["quadratic2d", "random"])
def test_output_space_equals_parameter_space_1000_steps(case):
    if case == "quadratic2d":
        eps = 0.05
        c, s = math.cos(0.4), math.sin(0.4)  # Q = R diag(1, −ε) Rᵀ: θ = R φ, φ in the eigenbasis
        phi = (0.1, 2 / math.sqrt(eps))
        m = quadratic2d.as_second_order(eps, [c * phi[0] - s * phi[1], s * phi[0] + c * phi[1]], angle=0.4)
        lr = 1.0
    else:
        m = _random_model(3)
        # A step size that puts the initial top NTK eigenvalue at ηλ/2 = 0.75: strongly non-linear.
        J0 = second_order.jacobian(m.theta0, m)
        lr = 1.5 / float(jnp.linalg.eigvalsh(J0 @ J0.T / m.D)[-1])
    a, _ = gd(second_order.problem(m), lr, STEPS)
    b, _ = gd_output(m, lr, STEPS)
    assert not bool(a["diverged"][-1])
    _rel_close(a["residual_norm"], b["residual_norm"])
    _rel_close(a["loss"], b["loss"])
    for key in ("ntk_eigs", "hessian_eigs"):  # J (through J Jᵀ) and the Hessian JᵀJ + Σ z Q
        k = min(a[key].shape[-1], m.D if key == "ntk_eigs" else m.P)  # the NTK has D eigenvalues
        _rel_close(a[key][:, :k], b[key][:, :k])
    if case == "quadratic2d":
        assert float(jnp.max(a["eta_ntk_half"])) > 1


def test_divergent_initialisation_is_a_result():
    eps = 0.02
    s = q2d.simulate(eps, 1.0, [[0.3, 3 / math.sqrt(eps)], [0.1, 2 / math.sqrt(eps)]], 2000, chunk=1000)
    assert bool(s["diverged"][0]) and 0 < int(s["diverged_at"][0]) <= 10
    assert math.isnan(float(s["ratio"][0]))
    assert not bool(s["diverged"][1]) and int(s["diverged_at"][1]) == -1
    c = q2d.count_outcomes(s)
    assert (c["n_diverged"], c["n_eos"], c["n_below"]) == (1, 1, 0)


def test_batch_is_deterministic_and_seeded():
    a = quadratic2d.sample_inits(jax.random.PRNGKey(3), 8, 0.1, 4.0)
    b = quadratic2d.sample_inits(jax.random.PRNGKey(3), 8, 0.1, 4.0)
    c = quadratic2d.sample_inits(jax.random.PRNGKey(4), 8, 0.1, 4.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    sa, sb = q2d.simulate(0.1, 4.0, a, STEPS, chunk=STEPS), q2d.simulate(0.1, 4.0, b, STEPS, chunk=STEPS)
    for k in q2d.SUMMARY_KEYS:
        np.testing.assert_array_equal(sa[k], sb[k])


def test_batch_equals_single_runs_and_step_size_scaling():
    eps, lr = 0.1, 4.0
    th = quadratic2d.sample_inits(jax.random.PRNGKey(0), 8, eps, lr)
    batch = q2d.simulate(eps, lr, th, STEPS, chunk=STEPS)
    # E = 0: θ ↦ √η θ maps GD at step size η to GD at η = 1, so ηλ∞ is the same.
    scaled = q2d.simulate(eps, 1.0, th * math.sqrt(lr), STEPS, chunk=STEPS)
    np.testing.assert_allclose(batch["ratio"], scaled["ratio"], rtol=1e-12)
    # The summary is the mean of ηλ/2 over iterates 901..1000 of parameter-space GD
    # (gd records iterates 0..999; the last one is its final parameters).
    tr, last = gd(quadratic2d.problem(eps, th[3]), lr, STEPS, spectra="none", record_params=True)
    lam = jnp.concatenate([quadratic2d.ntk(tr["params"][-99:], eps), quadratic2d.ntk(last, eps)[None]])
    assert float(batch["ratio"][3]) == pytest.approx(float(jnp.mean(lr * lam / 2)), rel=1e-10)


def test_batch_summaries_equal_the_frozen_reference(monkeypatch):
    """Every summary of the batched sweep against the plain definition (each run frozen at its
    last finite iterate), on a batch where many runs diverge, some start above the edge, with
    several blocks and padding (block 64, B = 203) in two groups (two threads), E ≠ 0 and chunks
    that split the tail: bit for bit
    against the definition in JAX, to 1e-9 against NumPy for the runs that do not diverge (NumPy
    rounds differently, keeps subnormals that XLA flushes to zero, and the map amplifies the
    last bits over 300 steps)."""
    from references import quadratic2d_summaries, quadratic2d_summaries_jax

    monkeypatch.setattr(q2d, "BLOCK", 64)
    monkeypatch.setattr(q2d, "_workers", lambda: 2)  # two groups, two threads, whatever THREADS and the machine
    assert q2d._layout(203, 2) == (2, 2, 56)
    eps, lr, steps, E = 0.1, 4.0, 300, 0.05
    th = quadratic2d.sample_inits(jax.random.PRNGKey(5), 203, eps, lr, theta1=(0.05, 1.8), theta2=(0.0, 4.0))
    got = q2d.simulate(eps, lr, th, steps, E=E, tail=50, chunk=120)
    ref = quadratic2d_summaries(eps, lr, np.asarray(th), steps, E=E, tail=50)
    assert 20 < ref["diverged"].sum() < 180 and (ref["first_cross"] == 0).any() and (ref["first_cross"] > 0).any()
    exact = quadratic2d_summaries_jax(eps, lr, th, steps, E=E, tail=50)
    for key in q2d.SUMMARY_KEYS:
        np.testing.assert_array_equal(np.asarray(got[key]), exact[key], err_msg=key)
        assert np.asarray(got[key]).dtype == exact[key].dtype, key
    for key in ("diverged", "diverged_at", "first_cross"):
        np.testing.assert_array_equal(np.asarray(got[key]), ref[key], err_msg=key)
    ok = ~ref["diverged"]  # a diverging run's last finite iterates are ~1e300: their rounding is no test
    for key in ("ratio", "final_ratio", "max_ratio", "final_z"):
        np.testing.assert_allclose(np.asarray(got[key])[ok], ref[key][ok], rtol=1e-9, atol=1e-300, err_msg=key)


def test_segments_cover_each_phase_in_the_documented_pieces():
    """The sweep's calls (phases) cut at the tail and at every chunk; inside a call, segments of
    [0, FIRST), [2^k, 2^(k+1)) up to SEGMENT, then SEGMENT steps each, cut at the call's end."""
    assert q2d._phases(1000, 100, 400) == [(0, 400, False), (400, 800, False), (800, 900, False), (900, 1000, True)]
    assert q2d._phases(50, 50, 20_000) == [(0, 50, True)]  # simulate clamps tail to steps
    ends = jax.jit(q2d._segment_end)
    for start, stop in [(0, 5000), (3, 70), (900, 1000), (1500, 4100)]:
        t, cuts = start, []
        while t < stop:
            t1 = int(ends(jnp.int32(t), jnp.int32(stop)))
            assert t < t1 <= stop
            cuts.append(t1)
            t = t1
        want = sorted({c for c in [q2d.FIRST, *(2**k for k in range(40) if q2d.FIRST < 2**k <= q2d.SEGMENT),
                                   *range(q2d.SEGMENT, stop, q2d.SEGMENT), stop] if start < c <= stop})
        assert cuts == want, (start, stop)


@pytest.mark.slow
def test_two_cpu_devices_give_the_same_summaries(tmp_path):
    """Two threads, with one CPU device and with two (a process flag, so child processes; the
    groups go to the devices in turn): the summaries are bit-identical."""
    import os
    import subprocess
    import sys

    code = ("import sys, jax, numpy as np, eoslab\n"
            "from eoslab.dynamics import quadratic2d as q2d\n"
            "from eoslab.models.quadratic2d import sample_inits\n"
            "q2d.BLOCK, q2d.THREADS = 512, 2\n"
            "with eoslab.x64():\n"
            "    th = sample_inits(jax.random.PRNGKey(1), 3000, 0.1, 4.0, theta1=(0.05, 1.8), theta2=(0.0, 4.0))\n"
            "    s = q2d.simulate(0.1, 4.0, th, 500, E=0.02, tail=40, chunk=200)\n"
            "    np.savez(sys.argv[1], ndev=len(jax.devices()), **{k: np.asarray(v) for k, v in s.items()})\n")
    out = {}
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{n}.npz")], env=env, check=True)
        out[n] = np.load(tmp_path / f"{n}.npz")
    assert int(out[1]["ndev"]) == 1 and int(out[2]["ndev"]) == 2
    assert out[1]["diverged"].sum() > 100
    for k in q2d.SUMMARY_KEYS:
        np.testing.assert_array_equal(out[1][k], out[2][k], err_msg=k)
