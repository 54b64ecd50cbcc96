"""Theorem 1's 2-D model in output space: the exact (z, λ) map, its two-step map, batched
simulation, and the limit of the NTK eigenvalue at the edge of stability (EoS).

Model (Q's eigenbasis): f = ½(θ₁² − εθ₂²), residual z = f − E, NTK λ = θ₁² + ε²θ₂², loss ½z².
With a = θ₁², b = εθ₂² one GD step is a' = a(1 − ηz)², b' = b(1 + εηz)², and (z, λ) ↔ (a, b)
is invertible, so GD closes *exactly* in (z, λ)::

    z' = z − ηλz + ½η²z²[(1−ε)λ + 2ε(z+E)],
    λ' = λ − 2ηz[(1−ε)λ + 2ε(z+E)] + η²z²[(1−ε+ε²)λ + 2ε(1−ε)(z+E)].

In the scaled variables x = ηz, ℓ = ηλ, e = ηE the map contains no η (every function here
works in these internally): a run at step size η and target E is the run at η = 1 and target
ηE. So the EoS limit ηλ∞ is a function of (ε, ηE) only, and of ε alone for E = 0.

The limit (derivation and numbers in ``docs/theory-eos2d.md``): near (x, ℓ) = (0, 2) GD has a
slow manifold ℓ = 2 + H(x; ε, e), an invariant curve of the one-step map that attracts nearby
orbits at the rate exp(−A²x²/(4ε)) (A ≈ 4) and ends on the line of minima x = 0 at

    ηλ∞ = 2 + H(0) = 2 − (1−e)ε/2 − (1−e)(27−11e)ε²/32 + (1−e)²(47e−153)ε³/128 + O(ε⁴)

(e = 0: 2 − ε/2 − 27ε²/32 − 153ε³/128 − 17385ε⁴/8192 − 40051ε⁵/8192 − …). :data:`SLOW_MANIFOLD` holds the
coefficients of H; :func:`eos_limit` evaluates the series at any order, science.md's
leading-order formula, or (default) the numerically exact value obtained by iterating the
exact map from points of the slow manifold until z underflows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics import sweep
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models.quadratic2d import check_eps

# --------------------------------------------------------------------------- exact map


def from_theta(theta, eps: float, E: float = 0.0):
    """``(z, λ)`` of θ (..., 2) given in Q's eigenbasis: z = ½(θ₁² − εθ₂²) − E, λ = θ₁² + ε²θ₂²."""
    theta = jnp.asarray(theta)
    t1, t2 = theta[..., 0], theta[..., 1]
    return 0.5 * (t1**2 - eps * t2**2) - E, t1**2 + eps**2 * t2**2


def _scaled_step(x, l, eps, e):
    """One GD step in x = ηz, ℓ = ηλ (e = ηE): the η-free form of :func:`step`."""
    f = x + e
    c1 = (1 - eps) * l + 2 * eps * f
    c2 = (1 - eps + eps**2) * l + 2 * eps * (1 - eps) * f
    return x - l * x + 0.5 * x * x * c1, l - 2 * x * c1 + x * x * c2


def step(z, lam, eps: float, lr=1.0, E=0.0):
    """One GD step of the 2-D model, exactly, in (z, λ). Arrays broadcast; returns ``(z', λ')``."""
    x, l = _scaled_step(lr * z, lr * lam, eps, lr * E)
    return x / lr, l / lr


def two_step(z, lam, eps: float, lr=1.0, E=0.0):
    """The exact two-step map (:func:`step` composed with itself): removes the period-2
    oscillation of the EoS regime, so its orbits converge monotonically near the edge."""
    return step(*step(z, lam, eps, lr, E), eps, lr, E)


@functools.partial(jax.jit, static_argnames=("steps", "two"))
def _iterate(z0, lam0, eps, lr, E, steps, two):
    f = two_step if two else step

    def body(c, _):
        n = f(*c, eps, lr, E)
        return n, n

    _, (z, lam) = jax.lax.scan(body, (z0, lam0), None, length=steps)
    return jnp.concatenate([z0[None], z]), jnp.concatenate([lam0[None], lam])


def iterate(z0, lam0, eps: float, lr=1.0, steps: int = 1000, E=0.0, two: bool = False):
    """Iterate :func:`step` (or :func:`two_step` with ``two=True``) ``steps`` times from scalars
    ``(z0, λ0)``. Returns ``(z, λ)``, each (steps + 1,) including the start. No divergence
    masking: an overflow shows as inf/NaN (see :func:`simulate` for masked batches)."""
    steps = check_positive_int("steps", steps)
    f64 = lambda v: jnp.asarray(v, jnp.float64)
    return _iterate(f64(z0), f64(lam0), f64(eps), f64(lr), f64(E), steps=steps, two=two)


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


def slow_manifold(x, eps: float, e: float = 0.0):
    """ℓ = ηλ on the slow manifold at scaled residual x = ηz (truncated at weight 11)."""
    return 2.0 + sum(_c(i, j, e) * eps**i * x**j for (i, j) in SLOW_MANIFOLD)


def series_coefficients(e: float = 0.0) -> list[float]:
    """[c_1, …, c_K] with ηλ∞ = 2 + Σ c_k ε^k + O(ε^{K+1}) (K = :data:`MAX_ORDER`)."""
    return [_c(k, 0, e) for k in range(1, MAX_ORDER + 1)]


def limit_series(eps, order: int = MAX_ORDER, e: float = 0.0):
    """ηλ∞ from the slow-manifold series truncated after ε^order (e = ηE)."""
    if not 1 <= order <= MAX_ORDER:
        raise EoslabError(f"series order must be 1..{MAX_ORDER}, got {order!r}")
    return 2.0 + sum(c * eps ** (k + 1) for k, c in enumerate(series_coefficients(e)[:order]))


def limit_leading(eps):
    """science.md's leading-order formula ηλ∞ ≈ 2 − 2ε/(4 − 3ε + 4ε²) (E = 0). Its ε term is
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
        x2, l2 = _scaled_step(x, l, eps, e)
        a = active(x, l)
        return jnp.where(a, x2, x), jnp.where(a, l2, l), n + 1

    return jax.lax.while_loop(cond, body, (x, l, jnp.array(0)))


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


def eos_limit(eps: float, lr: float = 1.0, E: float = 0.0, order: str | int = "exact") -> EosLimit:
    """Predicted limit of the NTK eigenvalue of the 2-D model at the edge of stability.

    Args:
      eps: ε ∈ (0, 1) (Q's eigenvalues are {1, −ε}).
      lr: step size η > 0 (only sets the units of ``lam``, and ηE).
      E: target; the prediction depends on ηE, which must be < 1 (for ηE ≥ 1 the slow flow
        pushes ηλ above 2 and there is no EoS limit).
      order: ``"exact"`` (numerically exact, :func:`limit_numeric`), ``"leading"``
        (science.md's 2 − 2ε/(4 − 3ε + 4ε²), E = 0 only), or k = 1 … :data:`MAX_ORDER` (5)
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
            raise EoslabError("the leading-order formula of science.md is for E = 0; use 'exact' or a series order")
        val, unc = float(limit_leading(eps)), math.nan
    elif isinstance(order, int) and not isinstance(order, bool) and 1 <= order <= MAX_ORDER:
        val, unc = float(limit_series(eps, order, e)), math.nan
    else:
        raise EoslabError(f"unknown order {order!r}; expected one of {ORDERS}")
    return EosLimit(eps=eps, lr=lr, E=float(E), order=str(order), eta_lambda=val, uncertainty=unc)


# --------------------------------------------------------------------------- batched simulation
#: Per-run summary keys of :func:`simulate` (each a (B,) array).
SUMMARY_KEYS = {
    "ratio": "mean of ηλ_t/2 over the last `tail` steps (NaN if diverged): the measured λ∞η/2",
    "final_ratio": "ηλ_T/2 after the last step",
    "max_ratio": "max_t ηλ_t/2 (> 1: the run crossed the edge of stability)",
    "first_cross": "first t with ηλ_t > 2, −1 if never",
    "final_z": "residual z_T after the last step",
    "diverged": "True if the state became non-finite",
    "diverged_at": "first step with a non-finite state, −1 if none",
}


def _init_state(x, l):
    B = x.shape[0]
    f = jnp.float64
    return {"x": x, "l": l, "div": jnp.zeros(B, bool), "div_at": jnp.full(B, -1), "tail": jnp.zeros(B, f),
            "max_l": l, "first_cross": jnp.where(l > 2, 0, -1)}


def _advance(state, eps, e, t0, n, tail_from):
    """``n`` steps of one run (a dict of scalars) from global step t0, accumulating summaries."""

    def body(s, t):
        x2, l2 = _scaled_step(s["x"], s["l"], eps, e)
        bad = ~(jnp.isfinite(x2) & jnp.isfinite(l2)) & ~s["div"]
        div = s["div"] | bad
        x2, l2 = jnp.where(div, s["x"], x2), jnp.where(div, s["l"], l2)
        t1 = t + 1  # index of the new iterate
        return {
            "x": x2, "l": l2, "div": div,
            "div_at": jnp.where(bad, t1, s["div_at"]),
            "tail": s["tail"] + jnp.where(t1 >= tail_from, l2, 0.0),
            "max_l": jnp.maximum(s["max_l"], l2),
            "first_cross": jnp.where((s["first_cross"] < 0) & (l2 > 2), t1, s["first_cross"]),
        }, None

    state, _ = jax.lax.scan(body, state, t0 + jnp.arange(n), unroll=4)
    return state


@functools.partial(jax.jit, static_argnames=("n", "block"))
def _advance_batch(state, eps, e, t0, n, tail_from, block):
    """``n`` steps of a batch (B = k·block runs): ``lax.map`` over blocks of ``block`` runs,
    each a ``vmap`` of the scan over steps, so a block's state stays in cache for all n steps
    (a vmap over the whole batch per step is memory-bound once B·state ≳ the cache)."""
    B = state["x"].shape[0]
    blocks = jax.tree_util.tree_map(lambda a: a.reshape(B // block, block), state)
    run = lambda s: sweep(_advance, batched={"state": s}, eps=eps, e=e, t0=t0, n=n, tail_from=tail_from)
    out = jax.lax.map(run, blocks)
    return jax.tree_util.tree_map(lambda a: a.reshape(B), out)


#: Runs per cache block in :func:`simulate` (7 float64/int64 states of 2,048 runs ≈ 115 kB).
BLOCK = 2048


def simulate(eps: float, lr: float, theta0, steps: int, *, E: float = 0.0, tail: int = 100,
             chunk: int = 20_000, progress: Callable[[int], None] | None = None) -> dict:
    """GD from a batch of initialisations, summarised per run without storing trajectories.

    Iterates the exact (z, λ) map (identical to parameter-space GD, see the tests) for
    ``steps`` steps as one ``vmap`` (:func:`eoslab.dynamics.sweep`) of a ``lax.scan``, in
    chunks of ``chunk`` steps so that ``progress(steps_done)`` can be called between them.

    Args:
      theta0: (B, 2) initialisations in Q's eigenbasis.
      tail: the limit is the mean of ηλ_t/2 over the iterates t = steps−tail+1 … steps
        (an even ``tail`` averages out the period-2 oscillation before λ has converged; at
        EoS z → 0 geometrically, so λ converges and the mean equals the last value).
    Returns: a dict of (B,) arrays with keys :data:`SUMMARY_KEYS`.
    """
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    steps = check_positive_int("steps", steps)
    tail = min(check_positive_int("tail", tail), steps)
    theta0 = jnp.asarray(theta0, jnp.float64)
    if theta0.ndim != 2 or theta0.shape[1] != 2 or theta0.shape[0] == 0:
        raise EoslabError(f"theta0 must have shape (B, 2) with B >= 1, got {theta0.shape}")
    B = theta0.shape[0]
    block = min(BLOCK, B)
    pad = -B % block  # padded runs repeat the first one and are dropped at the end
    theta0 = jnp.concatenate([theta0, jnp.broadcast_to(theta0[:1], (pad, 2))])
    z0, lam0 = from_theta(theta0, eps, E)
    state = _init_state(lr * z0, lr * lam0)
    args = (jnp.float64(eps), jnp.float64(lr * E))
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        state = _advance_batch(state, *args, jnp.asarray(done), n, jnp.asarray(steps - tail + 1), block)
        done += n
        if progress is not None:
            progress(done)
    state = jax.tree_util.tree_map(lambda a: a[:B], state)
    div = state["div"]
    nan = jnp.nan
    return {
        "ratio": jnp.where(div, nan, state["tail"] / (2 * tail)),
        "final_ratio": jnp.where(div, nan, state["l"] / 2),
        "max_ratio": state["max_l"] / 2,
        "first_cross": state["first_cross"],
        "final_z": jnp.where(div, nan, state["x"] / lr),
        "diverged": div,
        "diverged_at": state["div_at"],
    }


#: Default box of initialisations of ``eoslab run quadratic2d``, in the scaled coordinates
#: (θ₁√η, θ₂√(εη)). At ε = 0.1 about 93 % of its runs end at the EoS (≈ 90 % cross ηλ = 2),
#: none diverge; the basin narrows as ε decreases (at ε = 0.02 use θ₂√(εη) ∈ [1.6, 2.2]).
DEFAULT_THETA1 = (0.1, 0.3)
DEFAULT_THETA2 = (1.8, 2.6)


def sample_inits(key, n: int, eps: float, lr: float, theta1=DEFAULT_THETA1, theta2=DEFAULT_THETA2):
    """(n, 2) initialisations uniform in θ₁√η ∈ ``theta1``, θ₂√(εη) ∈ ``theta2``.

    With E = 0, θ ↦ √η θ maps GD at step size η to GD at η = 1, so these scaled ranges give
    the same dynamics at every η (and θ₂ ~ c/√ε puts f ≈ −c²/2 at O(1) for every ε)."""
    n = check_positive_int("number of initialisations", n)
    for name, (lo, hi) in (("theta1", theta1), ("theta2", theta2)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise EoslabError(f"{name} range must be finite with lo <= hi, got {(lo, hi)}")
    k1, k2 = jax.random.split(key)
    u1 = jax.random.uniform(k1, (n,), jnp.float64, theta1[0], theta1[1])
    u2 = jax.random.uniform(k2, (n,), jnp.float64, theta2[0], theta2[1])
    return jnp.stack([u1 / math.sqrt(lr), u2 / math.sqrt(eps * lr)], axis=1)


def classify(summary: dict, threshold: float = 0.9) -> dict:
    """Counts and quantiles of a :func:`simulate` summary: a run ended at the EoS if its
    λ∞η/2 > ``threshold``, below it otherwise, unless it diverged."""
    r = np.asarray(summary["ratio"])
    div = np.asarray(summary["diverged"])
    eos = ~div & (r > threshold)
    below = ~div & ~eos
    q = np.quantile(r[eos], [0.05, 0.25, 0.5, 0.75, 0.95]) if eos.any() else np.full(5, np.nan)
    return {
        "n_runs": int(r.size),
        "n_eos": int(eos.sum()),
        "n_below": int(below.sum()),
        "n_diverged": int(div.sum()),
        "n_crossed_edge": int((np.asarray(summary["first_cross"]) >= 0).sum()),
        "median_ratio": float(q[2]),
        "quantiles_ratio": {"q05": float(q[0]), "q25": float(q[1]), "q75": float(q[3]), "q95": float(q[4])},
        "unconverged_eos": int((eos & ~(np.abs(np.asarray(summary["final_z"])) < 1e-8)).sum()),
    }


def limit_comparison(eps_values, *, n_inits: int = 256, seed: int = 0, steps: int | None = None) -> list[dict]:
    """Predicted vs simulated ηλ∞ for each ε (E = 0, η = 1): one row per ε with the
    reference run from θ₀ = (0.1, 2/√ε) (``sim_ref``, NaN unless it ends at the EoS having
    crossed the edge), the median over ``n_inits`` default-box runs that cross the edge
    (``sim_median``, and their 5–95 % range), science.md's formula, the series at each order
    and the exact slow-manifold limit with its uncertainty."""
    rows = []
    for eps in eps_values:
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
        rows.append(row)
    return rows


def trajectories(eps: float, lr: float, theta0, steps: int, *, E: float = 0.0, max_points: int = 4000) -> dict:
    """Full trajectories of a few runs, by parameter-space GD (:func:`eoslab.dynamics.gd`, one
    ``sweep``), decimated to at most ``max_points`` log-spaced steps for plotting.

    Args: theta0 (K, 2) in Q's eigenbasis. Returns ``{"t": (M,), "theta": (K, M, 2),
    "ratio": (K, M) = ηλ_t/2, "eps", "lr", "E"}`` (NaN after a divergence)."""
    from eoslab.dynamics import gd
    from eoslab.models import quadratic2d

    theta0 = jnp.asarray(theta0, jnp.float64)
    steps = check_positive_int("steps", steps)
    prob = quadratic2d.problem(eps, theta0[0], E)
    traj, _ = sweep(gd, batched={"params0": theta0}, problem=prob, lr=lr, steps=steps, k=1,
                    spectra="none", record_params=True)
    t = np.unique(np.geomspace(1, steps, max_points).astype(int) - 1)
    th = np.asarray(traj["params"])[:, t]
    return {"t": t, "theta": th, "ratio": lr * np.asarray(quadratic2d.ntk(th, eps)) / 2,
            "eps": eps, "lr": lr, "E": E}
