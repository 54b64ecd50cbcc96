"""Theorem 1's 2-D model: the limit of the NTK eigenvalue at the edge of stability (EoS).

Model (Q's eigenbasis): f = ½(θ₁² − εθ₂²), residual z = f − E, NTK λ = θ₁² + ε²θ₂², loss ½z².
With a = θ₁², b = εθ₂² one GD step is a' = a(1 − ηz)², b' = b(1 + εηz)², and (z, λ) ↔ (a, b)
is invertible, so GD closes *exactly* in (z, λ)::

    z' = z − ηλz + ½η²z²[(1−ε)λ + 2ε(z+E)],
    λ' = λ − 2ηz[(1−ε)λ + 2ε(z+E)] + η²z²[(1−ε+ε²)λ + 2ε(1−ε)(z+E)].

GD closes exactly in (z, λ) (the map and the batched simulation are
:mod:`eoslab.dynamics.quadratic2d`). In the scaled variables x = ηz, ℓ = ηλ, e = ηE the map contains
no η (every function here works in these internally): a run at step size η and target E is the run at η = 1 and target
ηE. So the EoS limit ηλ∞ is a function of (ε, ηE) only, and of ε alone for E = 0.

The limit (derivation and numbers in ``docs/theory-eos2d.md``): near (x, ℓ) = (0, 2) GD has a
slow manifold ℓ = 2 + H(x; ε, e), an invariant curve of the one-step map that attracts nearby
orbits at the rate exp(−A²x²/(4ε)) (A ≈ 4) and ends on the line of minima x = 0 at

    ηλ∞ = 2 + H(0) = 2 − (1−e)ε/2 − (1−e)(27−11e)ε²/32 + (1−e)²(47e−153)ε³/128 + O(ε⁴)

(e = 0: 2 − ε/2 − 27ε²/32 − 153ε³/128 − 17385ε⁴/8192 − 40051ε⁵/8192 − …). :data:`SLOW_MANIFOLD` holds the
coefficients of H; :func:`eos_limit` evaluates the series at any order, the paper's
leading-order formula (Agarwala et al. 2023, Theorem 1), or (default) the numerically exact value obtained by iterating the
exact map from points of the slow manifold until z underflows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress
from eoslab.dynamics.quadratic2d import count_outcomes, scaled_step, simulate
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models.quadratic2d import DEFAULT_THETA1, DEFAULT_THETA2, check_eps, sample_inits
from eoslab._precision import x64
# --------------------------------------------------------------------------- the limit
#: Slow manifold ℓ = 2 + H(x), H = Σ c_ij(e) εⁱ xʲ with x = ηz, e = ηE (every term of weight
#: 2i + j ≤ 11). Entry (i, j) → (denominator, integer coefficients of 1, e, e², … of the
#: numerator). Derived by solving the invariance equation H(x'(x, H)) = ℓ'(x, H) − 2 of the
#: one-step map order by order in the weight (x ~ √ε, ℓ − 2 ~ √ε); exact rationals (regenerate
#: with ``python src/eoslab/theory/eos2d_derive.py --weight 10``, needs sympy). Checked by
#: tests: the invariance residual of the truncation scales as (√ε)¹³, and the series matches
#: exact simulations. The i = 0 row sums to 2x/(1 − x): at ε = 0 the curve ℓ(1 − x) = 2 is
#: invariant and the map on it, x ↦ −x/(1 − x), is an involution.
SLOW_MANIFOLD: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {
    (0, 1): (1, (2,)),
    (0, 2): (1, (2,)),
    (1, 0): (2, (-1, 1)),
    (0, 3): (1, (2,)),
    (1, 1): (1, (-2, 2)),
    (0, 4): (1, (2,)),
    (1, 2): (8, (-19, 15)),
    (2, 0): (32, (-27, 38, -11)),
    (0, 5): (1, (2,)),
    (1, 3): (8, (-35, 15)),
    (2, 1): (2, (0, 1, -1)),
    (0, 6): (1, (2,)),
    (1, 4): (32, (-201, 61)),
    (2, 2): (128, (149, -146, -67)),
    (3, 0): (128, (-153, 353, -247, 47)),
    (0, 7): (1, (2,)),
    (1, 5): (16, (-131, 31)),
    (2, 3): (128, (389, -322, -67)),
    (3, 1): (32, (0, 31, -46, 15)),
    (0, 8): (1, (2,)),
    (1, 6): (128, (-1295, 251)),
    (2, 4): (256, (1799, -1010, -141)),
    (3, 2): (512, (-757, 1159, -639, 237)),
    (4, 0): (8192, (-17385, 55556, -62806, 28484, -3849)),
    (0, 9): (1, (2,)),
    (1, 7): (128, (-1545, 253)),
    (2, 5): (64, (833, -350, -39)),
    (3, 3): (512, (-1849, 2527, -643, 221)),
    (4, 1): (128, (0, 211, -495, 357, -73)),
    (0, 10): (1, (2,)),
    (1, 8): (512, (-7189, 1017)),
    (2, 6): (1024, (21563, -7190, -701)),
    (3, 4): (2048, (-16319, 18461, -2573, 783)),
    (4, 2): (32768, (-107477, 257412, -222286, 90468, -18117)),
    (5, 0): (16384, (-80102, 313551, -471456, 333506, -106338, 10839)),
    (0, 11): (1, (2,)),
    (1, 9): (128, (-2051, 255)),
    (2, 7): (1024, (31973, -8738, -779)),
    (3, 5): (1024, (-17081, 15135, -1139, 333)),
    (4, 3): (32768, (-129429, 356292, -307086, 97316, -17093)),
    (5, 1): (8192, (0, 26557, -84628, 96014, -44372, 6429)),
}
#: Highest power of ε in the series of the limit (the c_k0 above).
MAX_ORDER = max(i for i, j in SLOW_MANIFOLD if j == 0)
#: Below this ε(1 − ηE) the exact limit is the series: its first neglected term (c₆ε⁶, with
#: |c₆| ≈ 11 if the coefficients keep growing ~2.3× per order) is below double-precision
#: rounding, while iterating would take ~80/ε steps.
_SERIES_BELOW = 1e-3
ORDERS = ("exact", "leading") + tuple(range(1, MAX_ORDER + 1))


def _c(i: int, j: int, e: float) -> float:
    den, num = SLOW_MANIFOLD[(i, j)]
    return sum(a * e**k for k, a in enumerate(num)) / den


@x64
def slow_manifold(x, eps: float, e: float = 0.0):
    """ℓ = ηλ on the slow manifold at scaled residual x = ηz (truncated at weight 11)."""
    return 2.0 + sum(_c(i, j, e) * eps**i * x**j for (i, j) in SLOW_MANIFOLD)


@x64
def series_coefficients(e: float = 0.0) -> list[float]:
    """[c_1, …, c_K] with ηλ∞ = 2 + Σ c_k ε^k + O(ε^{K+1}) (K = :data:`MAX_ORDER`)."""
    return [_c(k, 0, e) for k in range(1, MAX_ORDER + 1)]


@x64
def limit_series(eps, order: int = MAX_ORDER, e: float = 0.0):
    """ηλ∞ from the slow-manifold series truncated after ε^order (e = ηE)."""
    if not 1 <= order <= MAX_ORDER:
        raise EoslabError(f"series order must be 1..{MAX_ORDER}, got {order!r}")
    return 2.0 + sum(c * eps ** (k + 1) for k, c in enumerate(series_coefficients(e)[:order]))


@x64
def limit_leading(eps):
    """The leading-order formula ηλ∞ ≈ 2 − 2ε/(4 − 3ε + 4ε²) (E = 0). Its ε term is
    right; its ε² term (3/8) is not (the true coefficient is 27/32)."""
    return 2.0 - 2.0 * eps / (4.0 - 3.0 * eps + 4.0 * eps**2)


#: Starting points for the numerical limit: x₀ = ±√(κε) with κ from κ_max/2 to κ_max,
#: κ_max = min(12, X²/ε). Orbits started off the manifold approach it by a factor
#: ~exp(−A²κ/4) (A ≈ 4) before they reach x = 0, so a large κ makes the start's truncation
#: error irrelevant, while |x₀| ≤ X = 0.55 keeps the start where the manifold exists (orbits
#: started at |x₀| ≳ 0.65 can leave it at ε ≈ 0.1). The spread over κ measures how universal
#: the limit is.
_KAPPA_MAX, _X_MAX, _N_STARTS = 12.0, 0.55, 5


@jax.jit
def _run_to_minimum(x, l, eps, e, tol, max_steps):
    """Iterate the scaled map on a batch until every orbit has |x| ≤ tol or is non-finite."""

    def active(x, l):
        return jnp.isfinite(x) & jnp.isfinite(l) & (jnp.abs(x) > tol)

    def cond(c):
        x, l, n = c
        return jnp.any(active(x, l)) & (n < max_steps)

    def body(c):
        x, l, n = c
        x2, l2 = scaled_step(x, l, eps, e)
        a = active(x, l)
        return jnp.where(a, x2, x), jnp.where(a, l2, l), n + 1

    return jax.lax.while_loop(cond, body, (x, l, jnp.array(0)))


@x64
def limit_numeric(eps: float, e: float = 0.0) -> tuple[float, float]:
    """Numerically exact ηλ∞ and its uncertainty, from the exact map (e = ηE).

    Starts at the points (x₀, 2 + H(x₀)) of the (truncated) slow manifold with
    x₀ = ±√(κε) (see :data:`_KAPPA_MAX`), iterates the exact one-step map until |x| < 1e-18 (λ
    then moves by less than one ulp), and returns the median limit and half the range of the
    limits. The range is the limit's intrinsic non-universality (orbits from different starts
    end at points exp(−c/ε)-close): ~1e-14 for ε ≤ 0.03, 1e-10 at ε = 0.05, 4e-7 at 0.1,
    4e-5 at 0.15, 1e-3 at 0.2, 2e-2 at 0.3 (by then the "limit" is no prediction at all).
    Returns (nan, nan) when fewer than half the orbits reach a minimum.
    """
    rate = eps * (1 - e) / 2  # |x| shrinks by (1 − rate) per step at the limit
    if rate < _SERIES_BELOW / 2:
        # uncertainty: the last term × 3ε, a bound on c₆ε⁶ if the coefficient ratios stay ≲ 3
        return float(limit_series(eps, MAX_ORDER, e)), 3 * abs(_c(MAX_ORDER, 0, e)) * eps ** (MAX_ORDER + 1)
    kappa_max = min(_KAPPA_MAX, _X_MAX**2 / eps)
    x0 = np.sqrt(np.linspace(kappa_max / 2, kappa_max, _N_STARTS) * eps)
    x0 = np.concatenate([x0, -x0])
    l0 = np.array([slow_manifold(x, eps, e) for x in x0])
    max_steps = int(60.0 / rate) + 10_000
    x, l, _ = _run_to_minimum(jnp.asarray(x0), jnp.asarray(l0), jnp.float64(eps), jnp.float64(e),
                              jnp.float64(1e-18), max_steps)
    ok = np.isfinite(np.asarray(l)) & (np.abs(np.asarray(x)) <= 1e-18)
    if ok.sum() < len(ok) / 2:
        return math.nan, math.nan
    lims = np.asarray(l)[ok]
    return float(np.median(lims)), float((lims.max() - lims.min()) / 2)


@dataclasses.dataclass(frozen=True)
class EosLimit:
    """The predicted EoS limit of the 2-D model.

    ``eta_lambda`` = ηλ∞ (2 is the edge), ``ratio`` = ηλ∞/2 (what ``eoslab run`` reports as
    λ∞η/2), ``lam`` = λ∞ (NTK eigenvalue, in the units of the model at step size ``lr``).
    ``uncertainty`` (on ηλ∞) is the spread of the exact limit over slow-manifold starts for
    ``order="exact"``, NaN for the truncated formulas.
    """

    eps: float
    lr: float
    E: float
    order: str
    eta_lambda: float
    uncertainty: float

    @property
    def ratio(self) -> float:
        return self.eta_lambda / 2.0

    @property
    def lam(self) -> float:
        return self.eta_lambda / self.lr

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(ratio=self.ratio, lam=self.lam)
        return d


@x64
def eos_limit(eps: float, lr: float = 1.0, E: float = 0.0, order: str | int = "exact") -> EosLimit:
    """Predicted limit of the NTK eigenvalue of the 2-D model at the edge of stability.

    Args:
      eps: ε ∈ (0, 1) (Q's eigenvalues are {1, −ε}).
      lr: step size η > 0 (only sets the units of ``lam``, and ηE).
      E: target; the prediction depends on ηE, which must be < 1 (for ηE ≥ 1 the slow flow
        pushes ηλ above 2 and there is no EoS limit).
      order: ``"exact"`` (numerically exact, :func:`limit_numeric`), ``"leading"``
        (the two-step map's 2 − 2ε/(4 − 3ε + 4ε²), E = 0 only), or k = 1 … :data:`MAX_ORDER` (5)
        (the series through ε^k).
    """
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    e = lr * float(E)
    if not e < 1.0:
        raise EoslabError(f"no edge-of-stability limit for lr*E >= 1 (got lr*E = {e!r})")
    if order == "exact":
        val, unc = limit_numeric(eps, e)
    elif order == "leading":
        if e != 0.0:
            raise EoslabError("the leading-order formula is for E = 0; use 'exact' or a series order")
        val, unc = float(limit_leading(eps)), math.nan
    elif isinstance(order, int) and not isinstance(order, bool) and 1 <= order <= MAX_ORDER:
        val, unc = float(limit_series(eps, order, e)), math.nan
    else:
        raise EoslabError(f"unknown order {order!r}; expected one of {ORDERS}")
    return EosLimit(eps=eps, lr=lr, E=float(E), order=str(order), eta_lambda=val, uncertainty=unc)


@x64
def limit_comparison(eps_values, *, n_inits: int = 256, seed: int = 0, steps: int | None = None) -> list[dict]:
    """Predicted vs simulated ηλ∞ for each ε (E = 0, η = 1): one row per ε with the
    reference run from θ₀ = (0.1, 2/√ε) (``sim_ref``, NaN unless it ends at the EoS having
    crossed the edge), the median over ``n_inits`` default-box runs that cross the edge
    (``sim_median``, and their 5–95 % range), the leading-order formula, the series at each order
    and the exact slow-manifold limit with its uncertainty."""
    rows = []
    eps_values = list(eps_values)
    bar = progress.task("EoS limit over ε", len(eps_values), "ε values")
    with bar as b:
        for eps in eps_values:
            rows.append(_limit_row(eps, n_inits, seed, steps))
            b.advance(1)
    return rows


def _limit_row(eps, n_inits, seed, steps) -> dict:
    n = steps or int(200 / eps) + 5000  # |z| shrinks by ~(1 − ε/2) per step at the EoS
    th = jnp.concatenate([jnp.array([[0.1, 2 / math.sqrt(eps)]]),
                          sample_inits(jax.random.PRNGKey(seed), n_inits, eps, 1.0)])
    s = simulate(eps, 1.0, th, n)
    r, cross = 2 * np.asarray(s["ratio"]), np.asarray(s["first_cross"]) >= 0
    good = cross & (r > 1.8)
    ex = limit_numeric(eps)
    row = {"eps": float(eps), "steps": n,
           "sim_ref": float(r[0]) if good[0] else math.nan,
           "sim_median": float(np.median(r[1:][good[1:]])) if good[1:].any() else math.nan,
           "sim_q05": float(np.quantile(r[1:][good[1:]], 0.05)) if good[1:].any() else math.nan,
           "sim_q95": float(np.quantile(r[1:][good[1:]], 0.95)) if good[1:].any() else math.nan,
           "n_eos": int(good[1:].sum()), "leading": float(limit_leading(eps)),
           "exact": ex[0], "exact_uncertainty": ex[1]}
    for k in range(1, MAX_ORDER + 1):
        row[f"order{k}"] = float(limit_series(eps, k))
    return row


@x64
def batch_comparison(eps: float, lr: float, inits: int, steps: int, key, E: float = 0.0, theta1=None,
                     theta2=None, tail: int = 100, chunk: int = 20_000,
                     progress: Callable[[int], None] | None = None, per_run: bool = False):
    """Simulated vs predicted EoS limit of ``inits`` random starts (``eoslab run quadratic2d``).

    Draws θ₀ with :func:`eoslab.models.quadratic2d.sample_inits` from ``key`` in the scaled box
    (``theta1``, ``theta2``; defaults :data:`~eoslab.models.quadratic2d.DEFAULT_THETA1`/``2``),
    runs :func:`eoslab.dynamics.quadratic2d.simulate` (``progress(steps_done)`` between chunks of
    ``chunk`` steps), counts outcomes (:func:`~eoslab.dynamics.quadratic2d.count_outcomes`) and adds
    the exact prediction :func:`eos_limit` (NaN for ηE ≥ 1: no EoS limit exists, the simulation is
    still a result). Returns (JSON-ready dict, θ₀ (inits, 2)), and with ``per_run`` also the
    per-run summary of :func:`~eoslab.dynamics.quadratic2d.simulate` (a dict of (inits,) arrays).
    """
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    inits = check_positive_int("number of initialisations (--inits)", inits)
    steps = check_positive_int("steps", steps)
    theta1 = tuple(theta1 or DEFAULT_THETA1)
    theta2 = tuple(theta2 or DEFAULT_THETA2)
    theta0 = sample_inits(key, inits, eps, lr, theta1, theta2)
    summary = simulate(eps, lr, theta0, steps, E=E, tail=tail, chunk=chunk, progress=progress)
    out = {"model": "quadratic2d", "eps": eps, "lr": lr, "E": E, "inits": inits, "steps": steps,
           "theta1_scaled_range": list(theta1), "theta2_scaled_range": list(theta2)}
    out.update(count_outcomes(summary))
    if lr * E < 1.0:
        pred = eos_limit(eps, lr, E)
        out["predicted_ratio"], out["predicted_uncertainty"] = pred.ratio, pred.uncertainty / 2
        out["predicted_lambda"] = pred.lam
    else:
        out["predicted_ratio"] = out["predicted_uncertainty"] = out["predicted_lambda"] = math.nan
    out["median_minus_predicted"] = out["median_ratio"] - out["predicted_ratio"]
    return (out, theta0, summary) if per_run else (out, theta0)


#: ε up to which the exact limit is checked against exact GD (tests and docs/theory-eos2d.md): from
#: θ₀ = (0.1, 2/√ε) at η = 1 the two agree to ≤ 2e-11, and the median over the default box of
#: starts to its spread. Beyond it the slow-manifold end and where GD settles drift apart.
CHECKED_EPS = 0.05


@x64
def gd_check(eps: float, lr: float = 1.0, E: float = 0.0, n_inits: int = 128, seed: int = 0) -> dict:
    """Where exact GD settles, next to :func:`eos_limit`: the reference start θ₀ = (0.1, 2/√ε)/√η
    and ``n_inits`` starts from the default box, ``200/ε + 5000`` steps each. Counts only runs
    that crossed ηλ = 2 and settled (not diverged, |z| < 1e-8, λ∞η/2 > 0.9). Returns
    ``n_settled``, ``median``, ``q05``/``q95``, ``reference`` (NaN if it did not settle) and
    ``error``: the larger of |median − prediction| and |reference − prediction| (NaN when no
    run settled), an uncertainty that covers the prediction's actual error."""
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    pred = eos_limit(eps, lr, E).ratio
    n = int(200 / eps) + 5000
    ref = jnp.array([[0.1 / math.sqrt(lr), 2 / math.sqrt(eps * lr)]])
    th = jnp.concatenate([ref, sample_inits(jax.random.PRNGKey(seed), n_inits, eps, lr)])
    s = simulate(eps, lr, th, n, E=E)
    r = np.asarray(s["ratio"])
    ok = ((np.asarray(s["first_cross"]) >= 0) & ~np.asarray(s["diverged"]) & (r > 0.9)
          & (np.abs(np.asarray(s["final_z"])) < 1e-8))
    box = r[1:][ok[1:]]
    out = {"n_inits": n_inits, "steps": n, "n_settled": int(ok[1:].sum()),
           "reference": float(r[0]) if ok[0] else math.nan,
           "median": float(np.median(box)) if box.size else math.nan,
           "q05": float(np.quantile(box, 0.05)) if box.size else math.nan,
           "q95": float(np.quantile(box, 0.95)) if box.size else math.nan}
    errs = [abs(v - pred) for v in (out["median"], out["reference"]) if v == v]
    out["error"] = max(errs) if errs else math.nan
    return out
