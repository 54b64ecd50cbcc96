"""The EoS limit of the 2-D model: slow-manifold series, exact numerical limit, and simulations."""

import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest

import eoslab
from eoslab.dynamics import gd
from eoslab.dynamics import quadratic2d as q2d
from eoslab.models import quadratic2d
from eoslab.theory import eos2d, eos_limit

# The README's reference numbers: exact GD, E = 0, η = 1, 3·10⁵ steps, θ₀ = (0.1, 2/√ε), 6 decimals.
REFERENCE = {0.02: 1.989653, 0.01: 1.994914}


def _reference_run(eps, steps=300_000):
    return q2d.simulate(eps, 1.0, [[0.1, 2 / math.sqrt(eps)]], steps)


# ---------------------------------------------------------------- the slow manifold (exact rationals)
def _manifold_residual(coeffs, t, X, E0, e):
    """ℓ' − 2 − H(x') at x = tX, ε = t²E0 on the curve ℓ = 2 + H(x), in exact arithmetic."""
    H = lambda x, eps: sum(Fraction(sum(a * e**k for k, a in enumerate(num)), den) * eps**i * x**j
                           for (i, j), (den, num) in coeffs.items())
    x, eps = t * X, t * t * E0
    l = 2 + H(x, eps)
    f = x + e
    c1 = (1 - eps) * l + 2 * eps * f
    c2 = (1 - eps + eps**2) * l + 2 * eps * (1 - eps) * f
    x2, l2 = x - l * x + Fraction(1, 2) * x * x * c1, l - 2 * x * c1 + x * x * c2
    return l2 - 2 - H(x2, eps)


def _residual_order(coeffs, X, E0, e):
    r = [_manifold_residual(coeffs, Fraction(1, n), X, E0, e) for n in (160, 320)]
    return math.log2(abs(r[0] / r[1]))


@pytest.mark.parametrize("e", [Fraction(0), Fraction(1, 3), Fraction(-1)])
@pytest.mark.parametrize("X,E0", [(Fraction(1), Fraction(1)), (Fraction(-2), Fraction(1, 2))])
def test_slow_manifold_is_invariant_to_its_order(e, X, E0):
    # With every coefficient of weight 2i + j ≤ 11 right, the invariance residual of the
    # one-step map is O(t¹³) for x ~ t, ε ~ t² (no weight-12 term survives: the weight-12
    # equation is the solvability condition that fixes the weight-10 constant c_5,0; measured
    # slopes 12.9–13.0 at t = 1/160). A wrong coefficient leaves a lower power.
    assert _residual_order(eos2d.SLOW_MANIFOLD, X, E0, e) > 12.5


def test_a_wrong_coefficient_breaks_invariance():
    bad = dict(eos2d.SLOW_MANIFOLD)
    den, num = bad[(4, 0)]
    bad[(4, 0)] = (den, (num[0] + 819,) + num[1:])  # c_4,0 off by 0.1 (5 %): residual −0.4 t¹⁰
    assert _residual_order(bad, Fraction(1), Fraction(1), Fraction(0)) < 12.5


def test_series_coefficients_closed_form():
    # 2 − ηλ∞ = ε/2 + 27ε²/32 + 153ε³/128 + 17385ε⁴/8192 + 40051ε⁵/8192 + … for E = 0; the ε
    # term is the leading-order formula's, the ε² term replaces its 3/8 (= expansion of 2ε/(4 − 3ε + 4ε²)).
    np.testing.assert_allclose(eos2d.series_coefficients(0.0),
                               [-1 / 2, -27 / 32, -153 / 128, -17385 / 8192, -40051 / 8192])
    e = 0.4  # first two orders for E ≠ 0: −(1−e)/2, −(1−e)(27−11e)/32
    np.testing.assert_allclose(eos2d.series_coefficients(e)[:2], [-(1 - e) / 2, -(1 - e) * (27 - 11 * e) / 32])


# ---------------------------------------------------------------- limits vs simulation
@pytest.fixture(scope="module")
def reference_limits():
    return {eps: 2 * float(_reference_run(eps)["ratio"][0]) for eps in REFERENCE}


def test_reference_numbers_exact_map(reference_limits):
    for eps, ref in REFERENCE.items():
        assert abs(reference_limits[eps] - ref) < 5e-7  # the reference is rounded to 6 decimals


def test_reference_number_parameter_space():
    # Independent path: parameter-space GD, last 100 NTK eigenvalues λ = θ₁² + ε²θ₂².
    # At the EoS z → 0 geometrically (×(1 − ε/2) per step), so λ has converged and the tail
    # mean equals the last value; the mean over an even number of steps would also cancel
    # the period-2 oscillation of an unconverged run.
    eps = 0.02
    tr, _ = gd(quadratic2d.problem(eps, [0.1, 2 / math.sqrt(eps)]), 1.0, 300_000, spectra="none",
               record_params=True)
    tail = quadratic2d.ntk(tr["params"][-100:], eps)
    assert abs(float(jnp.mean(tail)) - REFERENCE[eps]) < 5e-7
    assert float(jnp.max(tail) - jnp.min(tail)) < 1e-12


def test_limit_vs_theory(reference_limits):
    for eps, sim in reference_limits.items():
        exact = eos_limit(eps)
        # The exact limit is the simulation's limit up to the rounding of ~10⁵ steps.
        assert abs(exact.eta_lambda - sim) < 1e-11 and exact.uncertainty < 1e-12
        for k in range(1, eos2d.MAX_ORDER):
            # The order-k series neglects c_{k+1}ε^{k+1} + O(ε^{k+2}): allow twice the first term.
            tol = 2 * abs(eos2d.series_coefficients()[k]) * eps ** (k + 1)
            assert abs(eos_limit(eps, order=k).eta_lambda - sim) < tol
        # the leading-order formula has the wrong ε² coefficient (3/8 instead of 27/32): its error
        # (27/32 − 3/8)ε² exceeds the order-2 tolerance.
        tol2 = 2 * abs(eos2d.series_coefficients()[2]) * eps**3
        assert abs(eos_limit(eps, order="leading").eta_lambda - sim) > tol2


def test_limit_with_target_and_step_size():
    # E ≠ 0 enters through e = ηE only: simulate at η = 2, E = −0.25 (e = −0.5) from a basin point.
    eps, lr, E = 0.02, 2.0, -0.25
    th = np.array([[0.1, 2.2 / math.sqrt(eps)]]) / math.sqrt(lr)
    s = q2d.simulate(eps, lr, th, 60_000, E=E)
    assert int(s["first_cross"][0]) >= 0
    pred = eos_limit(eps, lr=lr, E=E)
    assert abs(2 * float(s["ratio"][0]) - pred.eta_lambda) < 1e-10
    assert pred.eta_lambda == pytest.approx(eos_limit(eps, lr=1.0, E=lr * E).eta_lambda, abs=1e-15)
    assert pred.lam == pytest.approx(pred.eta_lambda / lr) and pred.ratio == pytest.approx(pred.eta_lambda / 2)


def test_exact_limit_spread_grows_with_eps():
    # Universality: orbits from different slow-manifold starts end exp(−c/ε)-close.
    small, large = eos2d.limit_numeric(0.02), eos2d.limit_numeric(0.1)
    assert small[1] < 1e-12 and 1e-8 < large[1] < 1e-4
    # At small ε the exact limit is the series: through ε⁴ the first neglected term is
    # c_5 ε⁵ = −4.9ε⁵ = −1.5e-11 at ε = 0.005.
    exact = eos2d.limit_numeric(0.005)[0]
    c5 = eos2d.series_coefficients()[4]
    assert abs(exact - eos2d.limit_series(0.005, 4) - c5 * 0.005**5) < 0.1 * abs(c5) * 0.005**5


def test_eos_limit_bad_input():
    with pytest.raises(eoslab.EoslabError, match="eps"):
        eos_limit(1.2)
    with pytest.raises(eoslab.EoslabError, match="step size"):
        eos_limit(0.1, lr=0.0)
    with pytest.raises(eoslab.EoslabError, match="lr\\*E"):
        eos_limit(0.1, lr=2.0, E=0.6)
    with pytest.raises(eoslab.EoslabError, match="order"):
        eos_limit(0.1, order=9)
