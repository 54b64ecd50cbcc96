"""The minimalist two-layer network: closed forms, GFS, projected GD, phases, stable set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eoslab  # noqa: F401  (float64)
from eoslab.dynamics import gd
from eoslab.dynamics.projected import projected_gd
from eoslab.errors import EoslabError
from eoslab.theory.two_layer import simulate_two_layer
from eoslab.models import two_layer as tl
from eoslab.spectra import hessian_matrix
from eoslab.theory import two_layer as th

LAM1, LAM2 = 1.0, 0.01


def _problems():
    pop = tl.population_problem(2.0, 0.3)
    emp = tl.empirical_problem(jax.random.PRNGKey(3), 2.0, 0.3, 50)
    return pop, emp


@pytest.mark.parametrize("which", [0, 1])
def test_closed_forms_match_autodiff(which):
    problem = _problems()[which]
    sigma = tl.problem_covariance(problem)

    @jax.jit
    def both(theta):
        closed = (tl.loss(theta, sigma), tl.grad(theta, sigma), tl.hessian(theta, sigma), tl.sharpness(theta, sigma))
        H = hessian_matrix(problem, theta)
        auto = (problem.loss_fn(theta), jax.grad(problem.loss_fn)(theta), H, jnp.linalg.eigvalsh(H)[-1])
        return closed, auto

    closed, auto = jax.vmap(both)(jax.random.normal(jax.random.PRNGKey(which), (4, 3)))
    for c, a in zip(closed, auto):
        np.testing.assert_allclose(c, a, rtol=1e-11, atol=1e-13)


def test_population_loss_is_the_expectation():
    # Monte Carlo over x ~ N(0, diag(λ)): mean of ½(f(x) − x₂)² within 4 standard errors.
    lam1, lam2, theta = 3.0, 0.5, jnp.array([0.7, -0.4, 1.1])
    x, y = tl.sample(jax.random.PRNGKey(11), lam1, lam2, 400_000)
    per = 0.5 * (tl.predict(theta, x) - y) ** 2
    exact = 0.5 * lam1 * (0.7 * -0.4) ** 2 + 0.5 * lam2 * (0.7 * 1.1 - 1) ** 2
    se = float(jnp.std(per)) / np.sqrt(per.size)
    assert abs(float(jnp.mean(per)) - exact) < 4 * se
    np.testing.assert_allclose(tl.population_problem(lam1, lam2).loss_fn(theta), exact, rtol=1e-13)


def test_minimiser_spectrum():
    for alpha in (0.5, 1.0, 1.7):
        theta = jnp.array([alpha, 0.0, 1.0 / alpha])
        ev = jnp.linalg.eigvalsh(tl.hessian(theta, tl.covariance(LAM1, 0.2)))
        np.testing.assert_allclose(jnp.sort(ev), jnp.sort(th.minimiser_eigs(alpha, LAM1, 0.2)), atol=1e-12)


def _small_step_gd(theta, sigma, lr, steps):
    def body(t, _):
        return t - lr * tl.grad(t, sigma), None
    return jax.lax.scan(body, theta, None, length=steps)[0]


@pytest.mark.parametrize("theta0", [(0.3, 0.8, 0.2), (1.5, 0.4, -0.1), (0.2, 0.9, 1.3)])
def test_gfs_closed_form_matches_gradient_flow(theta0):
    # Independent references: a long small-step GD run (η = 2e-3, t = 80) and SciPy's DOP853.
    sigma = tl.covariance(2.0, 0.5)
    theta0 = jnp.array(theta0)
    end = _small_step_gd(theta0, sigma, 2e-3, 40_000)
    ode = th.gradient_flow(theta0, sigma, 80.0)
    pred = th.gfs_point(theta0)
    for ref, tol in ((end, 2e-3), (ode, 1e-7)):
        assert float(tl.loss(jnp.asarray(ref), sigma)) < 1e-14
        np.testing.assert_allclose(abs(ref[0]), abs(pred[0]), rtol=tol)
        np.testing.assert_allclose(tl.sharpness(jnp.asarray(ref), sigma), th.gfs_sharpness(theta0, sigma), rtol=2 * tol)
    # c is conserved by the flow (the ODE), not by GD.
    np.testing.assert_allclose(th.balance(jnp.asarray(ode)), th.balance(theta0), atol=1e-8)


def test_projected_gd_respects_box_and_reduces_to_gd():
    problem = tl.population_problem(LAM1, LAM2)
    lo, hi = jnp.array([0.0, -0.05, 0.0]), jnp.array([0.6, 0.05, 10.0])
    traj, final = projected_gd(problem, 4.0, 1000, lo, hi, record_params=True)
    P = traj["params"]
    assert bool(jnp.all((P >= lo) & (P <= hi))) and bool(jnp.all((final >= lo) & (final <= hi)))
    assert bool(jnp.any(traj["projected"]))
    # The box is binding at α = 0.6 (GD alone ends at α ≈ 0.705): a KKT point with L → 0 is reached.
    assert float(final[0]) == pytest.approx(0.6) and float(traj["loss"][-1]) < 1e-8
    # A box containing the whole GD trajectory changes nothing.
    a, _ = gd(problem, 1.0, 1000, record_params=True)
    b, _ = projected_gd(problem, 1.0, 1000, -100.0, 100.0, record_params=True)
    np.testing.assert_array_equal(a["params"], b["params"])
    assert not bool(jnp.any(b["projected"]))
    with pytest.raises(EoslabError):
        projected_gd(problem, 1.0, 10, 1.0, 0.0)


def test_phases_detector_on_a_synthetic_series():
    lr = 2.0                                              # edge 2/η = 1
    S = np.array([0.2, 0.5, 0.9, 1.2, 0.8, 1.1, 0.95, 0.97, 0.99, 0.99])
    L = np.array([1.0, 0.9, 0.8, 0.85, 0.6, 0.7, 0.5, 0.4, 0.3, 0.2])
    G = np.array([3.0, 2.0, 2.5, 2.0, 1.0, 1.0, 1.0, 0.99, 0.99, 0.99])
    ph = th.phases(S, L, G, lr)
    # EoS: first S > 1 (t = 3); convergence: after the last loss increase (L₅ > L₄), t = 5.
    assert (ph["eos_start"], ph["convergence_start"]) == (3, 5)
    assert ph["delta_eos"] == pytest.approx(2 * 1.2 - 2) and ph["delta_after"] == pytest.approx(2 * 1.1 - 2)
    assert ph["gfs_violations"] == 1 and ph["gfs_violation_steps"] == [1]
    assert ph["gfs_violations_by_phase"] == {"ps": 1, "eos": 0, "convergence": 0}


def test_default_run_shows_three_phases_and_converges():
    r = simulate_two_layer(LAM1, LAM2, 4.0, 700)
    ph = r["phases"]
    assert 0 < ph["eos_start"] < ph["convergence_start"] < 700
    assert ph["sharpness_at_ps_end"] > 10 * ph["sharpness_initial"]          # progressive sharpening
    assert ph["delta_eos"] > 0 and ph["delta_after"] < 0.05                  # self-stabilisation
    assert ph["final_loss"] < 1e-6 and ph["final_eta_sharpness"] <= 2.0
    assert ph["gfs_violations_by_phase"]["convergence"] == 0
    # GD moves c = α² − ‖β‖² by exactly η²(g_α² − ‖g_β‖²) per step.
    assert ph["balance_identity_error"] < 1e-12


def test_distance_to_stable_set():
    sigma, lr = tl.covariance(LAM1, LAM2), 4.0
    stable = jnp.array([0.6, 0.0, 1 / 0.6])                 # λ₁α² = 0.36 < 2/η = 0.5
    assert float(th.distance_to_stable_set(stable, sigma, lr)) == pytest.approx(0.0, abs=1e-14)
    eps = 1e-3
    d = float(th.distance_to_stable_set(stable + jnp.array([0.0, eps, 0.0]), sigma, lr))
    assert 0 < d <= eps * (1 + 1e-4)          # first-order (Gauss–Newton) projection: ≤ ε up to O(ε²)
    # An unstable minimiser (λ₁α² = 1 > 0.5) is at a positive distance ≤ the one to the stable minima.
    far = float(th.distance_to_stable_set(jnp.array([1.0, 0.0, 1.0]), sigma, lr))
    nearest_min = np.sqrt((1 - np.sqrt(0.5)) ** 2 + (1 - 1 / np.sqrt(0.5)) ** 2)
    assert 0 < far <= nearest_min + 1e-9


def test_empirical_version_close_to_population():
    # Same length as the default run, so the jitted diagnostics are reused. Both end at EoS just below 2/η.
    r_pop = simulate_two_layer(LAM1, LAM2, 4.0, 700)
    r_emp = simulate_two_layer(LAM1, LAM2, 4.0, 700, samples=5000, seed=1)
    assert r_emp["phases"]["final_loss"] < 1e-6 and r_emp["phases"]["eos_start"] > 0
    np.testing.assert_allclose(r_emp["phases"]["final_eta_sharpness"], r_pop["phases"]["final_eta_sharpness"], rtol=0.02)
    with pytest.raises(EoslabError):
        simulate_two_layer(LAM1, LAM2, -1.0, 10)
    with pytest.raises(EoslabError):
        tl.population_problem(LAM1, LAM2, (1.0, 2.0))


@pytest.mark.slow  # compiles the simulation: ~3 s
def test_a_step_size_that_overflows_is_a_diverged_run_not_an_overflow_error():
    """η = 1e300: η² overflows a Python float (it was an OverflowError out of the balance
    identity); the run is reported as diverged."""
    r = simulate_two_layer(1.0, 0.01, 1e300, 5, [0.05, 0.1, 0.05])
    assert r["phases"]["diverged"]
