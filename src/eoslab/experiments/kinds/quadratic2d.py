"""Kinds for the 2-D model of Theorem 1 (``f = ½θᵀQθ``, Q eigenvalues {1, −ε}).

* ``quadratic2d.eos_limit``: GD from given initialisations, the NTK eigenvalue λ_t tracked at
  every step; measures the limit ηλ∞ (the claims: the README's reference numbers and the
  theory), the first step past the edge, and divergence.
* ``quadratic2d.phase``: for each step size η, a batch of initialisations θ₀ = (a, b/√ε) with
  b on a grid and a random; each run is classified at EoS (ηλ∞/2 > 0.9), below it, or
  diverged (the convention of ``eoslab run quadratic2d``).

With ``E = 0`` the NTK is λ = θ₁² + ε²θ₂² (loss normaliser 1), so ηλ = 2 is the edge.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress
from eoslab.dynamics import EOS_THRESHOLD, gd, sweep
from eoslab.errors import MeasureError, integer, positive
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.models import quadratic2d

#: Number of final steps averaged for a limit (even: the iterates oscillate with period 2).
WINDOW = 200


def _in_unit(v):
    return None if 0 < v < 1 else "must lie in (0, 1)"


MODEL = {
    "name": Field(str, "quadratic2d", choices=("quadratic2d",), doc="the 2-D model of Theorem 1"),
    "eps": Field(float, doc="ε: Q has eigenvalues {1, −ε}", check=_in_unit),
    "E": Field(float, 0.0, doc="target value of f (the theorem: 0)"),
    "angle": Field(float, 0.0, doc="rotation of Q's eigenbasis, radians (the NTK is invariant)"),
}


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _ntk(theta, Q):
    """λ = |Qθ|² (the 1×1 NTK, normaliser 1), θ (..., 2)."""
    J = theta @ Q.T
    return jnp.sum(J**2, axis=-1)


# ---- quadratic2d.eos_limit ------------------------------------------------------------------
LIMIT_SCHEMA = {
    "model": MODEL,
    "init": {
        "theta1": Field(float, 0.1, doc="θ₁ at t = 0"),
        "theta2_scaled": Field(float, 2.0, doc="√ε·θ₂ at t = 0 (θ₂ = theta2_scaled/√ε)"),
    },
    "dynamics": {
        "lr": Field(float, 1.0, doc="step size η", check=positive),
        "steps": Field(int, doc="GD steps", check=integer(2 * WINDOW), static=True),
    },
    "track": {
        "head": Field(int, 2000, doc="first steps stored at every step (the transient)", static=True,
                      check=integer(1)),
        "every": Field(int, 11, doc="stride of the stored trace after `head` (odd: both branches of "
                       "the period-2 oscillation show)", static=True, check=integer(1)),
    },
}


def _stored_steps(steps: int, head: int, every: int) -> np.ndarray:
    idx = np.concatenate([np.arange(min(head, steps)), np.arange(head, steps, every), [steps - 1]])
    return np.unique(idx)


def _limit_stats(lam: np.ndarray, lr: float) -> tuple[float, float, float]:
    """(ηλ∞, drift, oscillation) from the last 2·WINDOW steps of λ_t: the limit is the mean of
    the last WINDOW values; drift = its change from the window before; oscillation = half the
    peak-to-peak range of the last window."""
    last, prev = lam[-WINDOW:], lam[-2 * WINDOW:-WINDOW]
    v = lr * last.mean()
    return float(v), float(abs(v - lr * prev.mean())), float(lr * np.ptp(last) / 2)


def run_limit(points: list[dict]) -> list[dict]:
    """One vmapped ``gd`` over the chunk (problems, step sizes and θ₀ batched)."""
    p0 = points[0]
    probs = [quadratic2d.problem(p["eps"], [p["theta1"], p["theta2_scaled"] / np.sqrt(p["eps"])],
                                 E=p["E"], angle=p["angle"]) for p in points]
    traj, _ = sweep(gd, batched={"problem": _stack(probs), "lr": jnp.array([p["lr"] for p in points])},
                    steps=p0["steps"], k=2, spectra="dense", record_params=True)
    traj = jax.tree_util.tree_map(np.asarray, traj)
    idx = _stored_steps(p0["steps"], p0["head"], p0["every"])
    out = []
    for i, p in enumerate(points):
        lam = traj["ntk_eigs"][i, :, 0]
        div = traj["diverged"][i]
        diverged = bool(div[-1])
        above = np.nonzero(p["lr"] * lam > 2)[0]
        limit, drift, osc = (np.nan, np.nan, np.nan) if diverged else _limit_stats(lam, p["lr"])
        out.append({
            "t": idx,
            "eta_ntk_half": traj["eta_ntk_half"][i, idx],
            # mean of two consecutive steps: removes the period-2 oscillation around the limit
            "eta_ntk_half_avg2": (traj["eta_ntk_half"][i, idx] + traj["eta_ntk_half"][i, np.minimum(idx + 1, idx[-1])]) / 2,
            "eta_lambda_half": traj["eta_lambda_half"][i, idx],
            "edge": traj["edge"][i, idx],
            "loss": traj["loss"][i, idx],
            "theta": traj["params"][i, idx],
            "eta_ntk_limit": np.float64(limit),
            "limit_drift": np.float64(drift),
            "limit_oscillation": np.float64(osc),
            "first_edge_step": np.int64(above[0] if above.size else -1),
            "diverged": np.bool_(diverged),
            "diverged_at": np.int64(np.argmax(div) if diverged else -1),
            "final_loss": np.float64(np.nan if diverged else traj["loss"][i, -1]),
        })
    return out


def _mean_of(runs, key: str, unc=None) -> Measurement:
    """Mean of a scalar over runs; uncertainty: the per-run ``unc(run)`` (largest) combined with
    the standard error across runs."""
    vals = np.array([r.scalars()[key] for r in runs], dtype=float)
    u_run = max((unc(r) for r in runs), default=0.0) if unc else 0.0
    se = vals.std(ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return Measurement(vals.mean(), float(np.hypot(u_run, se)), note=f"{len(vals)} run(s)")


def eta_ntk_limit(runs) -> Measurement:
    """ηλ∞: mean of ηλ_t over the last 200 steps; uncertainty = drift from the previous 200 steps
    + remaining half-oscillation (a bound on the distance to the limit while λ_t converges)."""
    if any(r.scalars()["diverged"] for r in runs):
        raise MeasureError("a selected run diverged: no limit")
    return _mean_of(runs, "eta_ntk_limit", lambda r: r.scalars()["limit_drift"] + r.scalars()["limit_oscillation"])


def first_edge_step(runs) -> Measurement:
    """First step t with ηλ_t > 2 (exact integer)."""
    steps = {r.scalars()["first_edge_step"] for r in runs}
    if len(steps) != 1:
        raise MeasureError(f"runs disagree on the first step past the edge: {sorted(steps)}")
    return Measurement(steps.pop(), 0.0)


def diverged_fraction(runs) -> Measurement:
    """Fraction of the selected runs that diverged (exact)."""
    return Measurement(np.mean([bool(r.scalars()["diverged"]) for r in runs]), 0.0)


def leading_order(runs) -> float:
    """ηλ∞ ≈ 2 − 2ε/(4 − 3ε + 4ε²) (the two-step map at leading order; E = 0; its ε² coefficient is off)."""
    from eoslab.theory import eos2d

    return float(eos2d.limit_leading(_param(runs, "eps")))


def theory(runs) -> Measurement:
    """The numerically exact EoS limit ηλ∞ of :func:`eoslab.theory.eos2d.eos_limit` (from the
    exact map on its slow manifold), with its uncertainty (spread over starting points)."""
    from eoslab.theory import eos2d

    lim = eos2d.eos_limit(_param(runs, "eps"), lr=_param(runs, "lr"), E=_param(runs, "E"))
    return Measurement(lim.eta_lambda, lim.uncertainty, note="theory.eos2d, exact")


def _param(runs, name):
    vals = {r.params[name] for r in runs}
    if len(vals) != 1:
        raise MeasureError(f"the selected runs have several values of {name}: {sorted(vals)}; narrow `where`")
    return vals.pop()


def limit_figures(results):
    from eoslab.plots import quadratic2d_report as plots

    return [
        ("quadratic2d_sharpness", plots.sharpness_to_edge(
            results, predictions={"leading order": leading_order, "theory": lambda r: theory(r).value}),
         "η·λ_t/2 of the NTK (solid) and the Hessian (faint) against the step t: it sharpens past the edge "
         "(red line, 2/η) within a few steps, then settles just below it, at the predicted limit (green)."),
        ("quadratic2d_landscape", plots.landscape(results),
         "GD trajectories in the (θ₁, θ₂) plane over the contours of log₁₀ L; black: the minimisers f = 0, "
         "thick where they are stable (ηλ ≤ 2); the first steps oscillate across the valley."),
    ]


register(Kind(
    name="quadratic2d.eos_limit", schema=LIMIT_SCHEMA, run=run_limit,
    measures={"eta_ntk_limit": eta_ntk_limit, "first_edge_step": first_edge_step,
              "diverged_fraction": diverged_fraction},
    predictions={"leading_order": leading_order, "theory": theory},
    figures=limit_figures, chunk=16, version=3,
    doc="GD on the 2-D model from given initialisations; the limit ηλ∞ of the NTK eigenvalue."))


# ---- quadratic2d.phase ----------------------------------------------------------------------
PHASE_SCHEMA = {
    "model": MODEL,
    "init": {
        "theta1_max": Field(float, 0.3, doc="θ₁ ~ Uniform(−theta1_max, theta1_max)", check=positive),
        "b_min": Field(float, 0.05, doc="smallest √ε·θ₂"),
        "b_max": Field(float, 3.0, doc="largest √ε·θ₂"),
        "n_b": Field(int, 30, doc="grid points of √ε·θ₂ in [b_min, b_max]", check=integer(2), static=True),
        "inits_per_b": Field(int, 8, doc="random θ₁ per grid point", check=integer(1), static=True),
    },
    "dynamics": {
        "lr": Field(float, doc="step size η", check=positive),
        "steps": Field(int, doc="GD steps", check=integer(2), static=True),
    },
}


def _phase_inits(p) -> np.ndarray:
    """θ₀ (N, 2): √ε·θ₂ on the b grid (each repeated inits_per_b times), θ₁ uniform (seeded)."""
    b = np.repeat(np.linspace(p["b_min"], p["b_max"], p["n_b"]), p["inits_per_b"])
    a = np.random.default_rng(p["seed"]).uniform(-p["theta1_max"], p["theta1_max"], b.shape)
    return np.stack([a, b / np.sqrt(p["eps"])], axis=1)


#: Chunks of a phase run's steps (progress is reported after each; results bit-identical to one scan).
PHASE_CHUNKS = 10


def _chunk_lengths(steps: int, chunks: int) -> list[int]:
    """``chunks`` equal lengths (one compilation) and, if ``steps`` does not divide, a remainder."""
    n = max(1, steps // max(1, chunks))
    lengths = [n] * (steps // n)
    return lengths + ([steps % n] if steps % n else [])


@functools.partial(jax.jit, static_argnames=("steps",))
def _phase_chunk(prob, lr, theta, steps):
    """``steps`` GD steps from every θ (N, 2), one vmapped scan: the final θ, whether each run
    diverged in this chunk, the chunk's step it diverged at (−1 if not) and the last loss."""
    traj, final = sweep(gd, batched={"params0": theta}, problem=prob, lr=lr, steps=steps, k=1, spectra="none")
    div = traj["diverged"][:, -1]
    return final, div, jnp.where(div, jnp.argmax(traj["diverged"], axis=1), -1), traj["loss"][:, -1]


@jax.jit
def _phase_end(prob, lr, final, div, loss):
    """The period-2-averaged ηλ∞/2 (λ at the last iterate and one step further); NaN if diverged."""
    _, nxt = sweep(gd, batched={"params0": final}, problem=prob, lr=lr, steps=1, k=1, spectra="none")
    ratio = lr * (_ntk(final, prob.data) + _ntk(nxt, prob.data)) / 4
    return jnp.where(div, jnp.nan, ratio), jnp.where(div, jnp.nan, loss)


def _phase_batch(prob, lr, theta0, steps, chunks: int = PHASE_CHUNKS):
    """GD from every θ₀ (N, 2) at one step size, in ``chunks`` vmapped scans (a run that diverged
    stays frozen at its last finite iterate, so it diverges again at once in the next chunk).
    Returns per init ηλ∞/2, the diverged flag, the step it diverged at (−1 if not) and the final
    loss; only the final state is kept."""
    theta = jnp.asarray(theta0)
    div = jnp.zeros(theta.shape[0], bool)
    div_at = jnp.full(theta.shape[0], -1)
    done = 0
    with progress.task(f"GD from {theta.shape[0]:,} starts (η = {float(lr):g})", steps, "steps") as bar:
        for n in _chunk_lengths(steps, chunks):
            theta, d, d_at, loss = _phase_chunk(prob, lr, theta, steps=n)
            div_at = jnp.where((div_at < 0) & d, d_at + done, div_at)
            div = div | d
            done += n
            bar.update(done)
    ratio, loss = _phase_end(prob, lr, theta, div, loss)
    return ratio, div, div_at, loss


def run_phase(points: list[dict]) -> list[dict]:
    """For each point (one step size): one vmapped ``gd`` over all its initialisations; only
    the final state is kept."""
    out = []
    for p in points:  # chunk = 1: each run is itself a batch of N initialisations
        prob = quadratic2d.problem(p["eps"], [0.0, 0.0], E=p["E"], angle=p["angle"])
        th0 = _phase_inits(p)
        ratio, div, div_at, loss = (np.asarray(x) for x in _phase_batch(prob, p["lr"], jnp.asarray(th0),
                                                                          p["steps"]))
        cls = np.where(div, 2, np.where(ratio > EOS_THRESHOLD, 1, 0)).astype(np.int8)
        out.append({
            "theta0": th0, "ratio": ratio, "final_loss": loss, "diverged": div, "diverged_at": div_at,
            "phase": cls,
            "frac_eos": np.float64((cls == 1).mean()), "frac_below": np.float64((cls == 0).mean()),
            "frac_diverged": np.float64((cls == 2).mean()), "n_inits": np.int64(cls.size),
        })
    return out


def _pooled(runs, key):
    return np.concatenate([r.arrays[key] for r in runs])


def max_converged_ratio(runs) -> Measurement:
    """Largest ηλ∞/2 over the runs that did not diverge and reached loss < 1e-12 (uncertainty:
    the size of the residual, which bounds how far λ can still move)."""
    ratio, loss = _pooled(runs, "ratio"), _pooled(runs, "final_loss")
    ok = np.isfinite(ratio) & (loss < 1e-12)
    if not ok.any():
        raise MeasureError("no run converged")
    return Measurement(ratio[ok].max(), float(np.sqrt(2 * loss[ok].max())), note=f"{ok.sum()} converged runs")


def eos_median_ratio(runs) -> Measurement:
    """Median of ηλ∞/2 over the runs at EoS; uncertainty: the standard error of a median,
    1.2533·σ̂/√n with σ̂ = IQR/1.349 (robust to the few outliers of the EoS group)."""
    ratio, cls = _pooled(runs, "ratio"), _pooled(runs, "phase")
    r = ratio[cls == 1]
    if r.size < 5:
        raise MeasureError(f"only {r.size} runs at EoS")
    q25, q75 = np.quantile(r, [0.25, 0.75])
    med = np.median(r)
    close = np.mean(np.abs(r - med) < 1e-9)
    return Measurement(med, 1.2533 * (q75 - q25) / 1.349 / np.sqrt(r.size),
                       note=f"{r.size} EoS runs, {close:.0%} of them within 1e-9 of the median")


def _frac(label):
    def f(runs):
        cls = _pooled(runs, "phase")
        p = float((cls == label).mean())
        return Measurement(p, float(np.sqrt(p * (1 - p) / cls.size)), note=f"{cls.size} runs")
    f.__doc__ = f"Fraction of runs in phase {label} (binomial standard error)."
    return f


def half_leading_order(runs) -> float:
    """The leading-order ηλ∞/2 = 1 − ε/(4 − 3ε + 4ε²)."""
    return leading_order(runs) / 2


def half_theory(runs) -> Measurement:
    """ηλ∞/2 of :func:`eoslab.theory.eos2d.eos_limit` (exact); for E = 0 it does not depend on η."""
    from eoslab.theory import eos2d

    E = _param(runs, "E")
    if E != 0.0:
        raise MeasureError("pooled runs over η have different limits when E ≠ 0; select one lr")
    lim = eos2d.eos_limit(_param(runs, "eps"), lr=1.0, E=0.0)
    return Measurement(lim.eta_lambda / 2, lim.uncertainty / 2, note="theory.eos2d, exact")


def phase_figures(results):
    from eoslab.plots import quadratic2d_report as plots

    return [("quadratic2d_phase", plots.phase_diagram(results),
             "Outcome of GD on the 2-D model over (η, initial √ε·θ₂): colour mixes the fractions of runs "
             "at EoS (green), converged below it (blue) and diverged (red); right: the fractions against η.")]


register(Kind(
    name="quadratic2d.phase", schema=PHASE_SCHEMA, run=run_phase,
    measures={"max_converged_ratio": max_converged_ratio, "eos_median_ratio": eos_median_ratio,
              "frac_eos": _frac(1), "frac_below": _frac(0), "frac_diverged": _frac(2)},
    predictions={"half_leading_order": half_leading_order, "half_theory": half_theory},
    figures=phase_figures, chunk=1, version=2,
    doc="Phase diagram of the 2-D model over (η, initialisation): at EoS / below / diverged."))
