"""The central flow of GD (Cohen et al., ICLR 2025) against discrete GD and gradient flow.

Kinds:

* ``central_flow.network``: a tanh MLP on the synthetic data (float64), or a random
  second-order model, run by :func:`eoslab.dynamics.central_flow.run` (GD, gradient flow and
  the central flow from the same point). The step size is set by ``eta_s0_half`` = ηλ₁(θ₀)/2
  (the dense Hessian at θ₀), so a config says how close to the edge training starts.
* ``central_flow.rmsprop``: the RMSProp central flow on the same MLPs
  (:func:`eoslab.dynamics.central_flow_rmsprop.run`) against discrete RMSProp and the stable flow.
* ``central_flow.quadratic2d``: the 2-D model of Theorem 1 over ε, where the exact GD limit
  2/η − δ is known (:func:`eoslab.theory.eos2d.eos_limit`) and the central flow holds 2/η.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import Problem, x64
from eoslab.errors import positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register

_frac = lambda v: None if 0.0 < v < 1.0 else "must lie in (0, 1)"
_nonneg = lambda v: None if v >= 0 else "must be ≥ 0"

NETWORK_SCHEMA = {
    "model": {
        "model": Field(str, "mlp", choices=("mlp", "second_order", "two_blocks"), static=True,
                       doc="a tanh MLP on synthetic data, a random second-order model (Theorem 2 ensemble), "
                           "or two independent 2-D models of Theorem 1 (block-diagonal Hessian)"),
        "eps_pair": Field(list, [0.05, 0.08], length=2, doc="two_blocks: ε of each 2-D block"),
        "theta2_pair": Field(list, [2.0, 1.9], length=2, doc="two_blocks: θ₂√ε of each block at the start (θ₁ = 0.1)"),
        "depth": Field(int, 2, doc="hidden layers (mlp)", static=True, check=positive_int),
        "width": Field(int, 8, doc="hidden units (mlp)", static=True, check=positive_int),
        "outputs": Field(int, 1, doc="outputs (mlp: 1 = regression, C ≥ 2 = one-hot classes)", static=True,
                         check=positive_int),
        "blocks": Field(int, 1, doc="mlp: independent copies of the network side by side, each on its own copy of "
                                    "the targets (block-diagonal Hessian; eoslab.models.blocks)", static=True,
                        check=positive_int),
        "block_seeds": Field(list, [], doc="mlp with blocks > 1: the initialisation seed of each block (empty: every "
                                           "block from the run's seed, i.e. identical copies)"),
        "D": Field(int, 10, doc="second-order model: datapoints", static=True, check=positive_int),
        "P": Field(int, 20, doc="second-order model: parameters", static=True, check=positive_int),
        "sigma_z": Field(float, 1.0, doc="second-order model: std of the initial residuals", check=positive),
    },
    "data": {
        "n": Field(int, 50, doc="synthetic examples (mlp)", static=True, check=positive_int),
        "d": Field(int, 16, doc="input dimension (mlp)", static=True, check=positive_int),
        "target_scale": Field(float, 2.0, doc="std of the regression targets (mlp)", check=positive),
    },
    "dynamics": {
        "eta_s0_half": Field(float, 0.68, doc="ηλ₁(θ₀)/2: the step size relative to the edge at θ₀", check=positive),
        "lr": Field(float, 0.0, doc="η itself when > 0 (then eta_s0_half is not used)", check=_nonneg),
        "steps": Field(int, 300, doc="GD steps (flows: the same time)", static=True, check=positive_int),
        "start": Field(int, 20, doc="plain GD steps before the three dynamics start from the same point",
                       static=True, check=_nonneg),
        "substeps": Field(int, 4, doc="Euler substeps of the flows per GD step", static=True, check=positive_int),
        "k": Field(int, 1, doc="Hessian eigenpairs tracked at the start", static=True, check=positive_int),
        "k_max": Field(int, 3, doc="most eigenpairs tracked", static=True, check=positive_int),
        "window": Field(int, 20, doc="steps of GD's centred moving average", static=True, check=positive_int),
        "fast_compile": Field(bool, False, doc="compile the flow with XLA's optimisation level 0 (less compilation, "
                                               "slower steps: the faster choice for short runs)", static=True),
    },
}

CURVES = ("loss", "avg_loss", "sharpness", "eigs", "trace_sigma", "n_active", "gd_loss", "gd_sharpness",
          "gf_loss", "dist_gd_cf", "dist_gd_gf", "products", "sdcp_residual", "alpha", "beta", "gd_x")


@x64
def two_blocks(eps_pair, theta2_pair) -> Problem:
    """Two independent 2-D models f_i = ½(θ_{i1}² − ε_i θ_{i2}²), L = ½(f₁² + f₂²): the Hessian is
    block-diagonal, so both top eigenvalues sharpen to 2/η and stay there together."""
    def fn(th, Q):
        return jnp.stack([0.5 * th[:2] @ Q[0] @ th[:2], 0.5 * th[2:] @ Q[1] @ th[2:]])

    Q = jnp.array([np.diag([1.0, -e]) for e in eps_pair], jnp.float64)
    th0 = jnp.array([0.1, theta2_pair[0] / np.sqrt(eps_pair[0]), 0.1, theta2_pair[1] / np.sqrt(eps_pair[1])],
                    jnp.float64)
    return Problem(fn, Q, jnp.zeros(2, jnp.float64), th0, "mse", 1.0)


def check_network_point(point: dict) -> str | None:
    """Combinations of parameters the schema cannot see one at a time."""
    seeds, B = point.get("block_seeds") or [], point.get("blocks", 1)
    if seeds and len(seeds) != B:
        return f"block_seeds must have one seed per block ({B}), got {len(seeds)}"
    if any(int(s) != s for s in seeds):
        return f"block_seeds must be integers, got {seeds!r}"
    if B > 1 and point.get("model", "mlp") != "mlp":
        return "blocks > 1 needs model = 'mlp'"
    if point.get("k", 1) > point.get("k_max", 3):
        return f"k ({point['k']}) must be ≤ k_max ({point['k_max']}): the tracked set grows from k up to k_max"
    return None


def network_problem(point: dict) -> Problem:
    """The point's problem in float64 (explicit dtypes: no reliance on a global switch)."""
    if point["model"] == "two_blocks":
        return two_blocks(point["eps_pair"], point["theta2_pair"])
    if point["model"] == "second_order":
        from eoslab.models import second_order

        m = second_order.random(jax.random.PRNGKey(point["seed"]), point["D"], point["P"],
                                sigma_z=point["sigma_z"], dtype=jnp.float64)
        return second_order.problem(m)
    from eoslab.data import synthetic
    from eoslab.models.mlp import MLP

    C = point["outputs"]
    ds = synthetic(point["n"], point["d"], target_scale=point["target_scale"], seed=point["seed"],
                   classes=C if C > 1 else None, dtype="float64")
    net = MLP(point["depth"], point["width"], "tanh", ds.out_dim)
    x, y = jnp.asarray(ds.x, jnp.float64), jnp.asarray(ds.y, jnp.float64)
    B = point["blocks"]
    if B == 1:
        return Problem.from_model(net, net.init(jax.random.PRNGKey(point["seed"]), ds.in_dim, jnp.float64), x, y)
    from eoslab.models.blocks import Blocks

    seeds = point["block_seeds"] or [point["seed"]] * B
    model = Blocks(net, B)
    params = model.init([jax.random.PRNGKey(int(s)) for s in seeds], ds.in_dim, jnp.float64)
    return Problem.from_model(model, params, x, jnp.tile(y, (1, B)))


@x64
def top_eigenvalue(problem: Problem) -> float:
    """λ₁ of the Hessian at θ₀: dense (``jax.hessian`` + ``eigvalsh``) up to P = 500, above that
    Lanczos with 100 products (a few times cheaper than the dense Hessian at P ~ 1,000; the top
    Ritz value agrees with the dense eigenvalue to ~1e-13 relative there)."""
    flat, unravel = ravel_pytree(problem.params)
    if flat.size <= 500:
        H = jax.jit(jax.hessian(lambda v: problem.loss_fn(unravel(v))))(flat)
        return float(jnp.linalg.eigvalsh(H)[-1])
    from eoslab.spectra.lanczos import fixed_start, lanczos
    from eoslab.spectra.operators import hvp

    @jax.jit
    def top(params):
        mv, _ = hvp(problem, params)
        return lanczos(mv, fixed_start(flat.size, flat.dtype), 100).values[0]

    return float(top(problem.params))


@x64
def simulate_network(point: dict) -> dict:
    from eoslab.dynamics import central_flow as cf

    problem = network_problem(point)
    lr = point["lr"] if point["lr"] > 0 else 2.0 * point["eta_s0_half"] / top_eigenvalue(problem)
    out = cf.run(problem, lr, point["steps"], k=point["k"], k_max=point["k_max"], substeps=point["substeps"],
                 start=point["start"], seed=point["seed"], fast_compile=point["fast_compile"])
    s = cf.summarize(out, lr, point["window"])
    arrays = {key: np.asarray(out[key]) for key in CURVES}
    arrays["gd_loss_smoothed"] = cf.smooth(out["gd_loss"], point["window"])
    arrays["lr"] = np.float64(lr)
    for key in ("onset", "max_at_edge"):
        arrays[key] = np.int64(s[key])
    return arrays


def _late(r):
    """The second half of the EoS phase (from the first row at the edge to the end)."""
    na = r.arrays["n_active"]
    on = np.flatnonzero(na > 0)
    if on.size == 0:
        return slice(0, 0)
    return slice((int(on[0]) + na.size) // 2, na.size)


def distance_ratio(runs) -> Measurement:
    """max over runs and the late EoS phase of ‖w_GD − w_CF‖ / ‖w_GD − w_GF‖."""
    vals = []
    for r in runs:
        a, late = r.arrays, _late(r)
        vals.append(np.max(a["dist_gd_cf"][late] / a["dist_gd_gf"][late]) if late.stop > late.start else np.nan)
    return Measurement(value=float(np.max(vals)), uncertainty=0.0)


def _rel_loss_errors(r):
    a, late = r.arrays, _late(r)
    return a["avg_loss"][late] / a["gd_loss_smoothed"][late] - 1


def avg_loss_error(runs) -> Measurement:
    """max over runs of |mean over the late EoS phase of (CF-predicted time-averaged loss / GD's
    moving-average loss − 1)|: the systematic error of the prediction."""
    vals = [abs(float(np.mean(_rel_loss_errors(r)))) if _late(r).stop > _late(r).start else np.nan for r in runs]
    return Measurement(value=float(np.max(vals)), uncertainty=0.0)


def avg_loss_max_error(runs) -> Measurement:
    """max over runs and the late EoS phase of |CF-predicted time-averaged loss / GD's
    moving-average loss − 1|: the pointwise error (GD's slow self-stabilization cycles included)."""
    vals = [float(np.max(np.abs(_rel_loss_errors(r)))) if _late(r).stop > _late(r).start else np.nan for r in runs]
    return Measurement(value=float(np.max(vals)), uncertainty=0.0)


def cf_loss_rise(runs) -> Measurement:
    """max over runs and steps of L(w_CF(t+1)) − L(w_CF(t)), relative to L(w_CF(0)) (≤ 0: non-increasing)."""
    return Measurement(value=float(max(np.max(np.diff(r.arrays["loss"])) / abs(r.arrays["loss"][0])
                                       for r in runs)), uncertainty=0.0)


def at_edge(runs) -> Measurement:
    """The largest number of Hessian eigenvalues at 2/η on the central flow."""
    return Measurement(value=float(max(int(r.arrays["max_at_edge"]) for r in runs)), uncertainty=0.0)


def multi_fraction(runs) -> Measurement:
    """min over runs of the fraction of the EoS phase (rows from the first one at the edge) with
    two or more eigenvalues at the edge."""
    vals = []
    for r in runs:
        na = r.arrays["n_active"]
        on = np.flatnonzero(na > 0)
        vals.append(float(np.mean(na[on[0]:] >= 2)) if on.size else 0.0)
    return Measurement(value=float(min(vals)), uncertainty=0.0)


def edge_error(runs) -> Measurement:
    """max over runs and the late EoS phase of |ηλ_i/2 − 1| for the eigenvalues at the edge (at
    each row the first ``n_active`` tracked ones: the eigenvalues are sorted, those at 2/η first)."""
    vals = []
    for r in runs:
        a, late = r.arrays, _late(r)
        e, na = a["eigs"][late] * float(a["lr"]) / 2 - 1, a["n_active"][late]
        at = np.arange(e.shape[1])[None, :] < na[:, None]
        vals.append(float(np.max(np.abs(e[at]))) if at.any() else np.nan)
    return Measurement(value=float(np.max(vals)), uncertainty=0.0)


def network_figures(results, rmsprop: bool = False):
    from eoslab.plots.central_flow import GD_NAMES, RMSPROP_NAMES, flow_axes
    from eoslab.plots.style import figure

    nm = RMSPROP_NAMES if rmsprop else GD_NAMES
    figs = []
    for r in results.runs[:1]:
        fig, axes = figure(ncols=4, width=3.4, height=3.4)
        lr = float(r.arrays["lr"])
        flow_axes(axes, r.arrays, lr, window=int(r.params["window"]), names=nm)
        fig.suptitle(f"{results.experiment.name}: {nm['opt']}, {nm['stable']} and central flow, η = {lr:.4g}, "
                     f"edge 2/η = {2 / lr:.4g}", fontsize=9)
        figs.append((f"{results.experiment.name}-flow", fig,
                     f"{nm['opt']} (blue; light: raw loss, dark: moving average), {nm['stable']} (grey, dotted) and "
                     f"the central flow (green; solid: predicted time-averaged loss {nm['avg']}) from the same "
                     f"point: loss, {nm['matrix']} eigenvalues vs 2/η, tr Σ, and distances in weight space."))
    return figs


#: The measures of a flow run on a network (GD's and RMSProp's kinds store the same arrays).
FLOW_MEASURES = {"distance_ratio": distance_ratio, "avg_loss_error": avg_loss_error,
                 "avg_loss_max_error": avg_loss_max_error, "cf_loss_rise": cf_loss_rise, "at_edge": at_edge,
                 "multi_fraction": multi_fraction, "edge_error": edge_error}

register(Kind(name="central_flow.network", schema=NETWORK_SCHEMA, run=lambda pts: [simulate_network(p) for p in pts],
              measures=FLOW_MEASURES,
              figures=network_figures, chunk=1, check_point=check_network_point,
              doc="central flow vs discrete GD and gradient flow on a tanh MLP or a random second-order model",
              version=1))


# ---- RMSProp -----------------------------------------------------------------------------------

RMSPROP_SCHEMA = {
    "model": {key: NETWORK_SCHEMA["model"][key] for key in ("depth", "width", "outputs")},
    "data": NETWORK_SCHEMA["data"],
    "dynamics": {
        "lr": Field(float, 1e-3, doc="RMSProp's η (the edge is λ₁(P⁻¹H) = 2/η)", check=positive),
        "beta2": Field(float, 0.99, doc="RMSProp's β₂", check=_frac),
        "eps": Field(float, 1e-8, doc="RMSProp's ε (inside the root, as optax)", check=positive),
        "steps": Field(int, 500, doc="RMSProp steps (flows: the same time)", static=True, check=positive_int),
        "start": Field(int, 0, doc="plain RMSProp steps (from ν₀ = ∇L(θ₀)²) before the three dynamics start "
                                   "from the same (θ, ν)", static=True, check=_nonneg),
        "substeps": Field(int, 4, doc="Euler substeps of the flows per step", static=True, check=positive_int),
        "k": Field(int, 3, doc="eigenpairs of P^{-1/2}HP^{-1/2} tracked", static=True, check=positive_int),
        "window": Field(int, 20, doc="steps of RMSProp's centred moving average", static=True, check=positive_int),
    },
}


@x64
def simulate_rmsprop(point: dict) -> dict:
    """The RMSProp central flow (:func:`eoslab.dynamics.central_flow_rmsprop.run`) on the point's MLP,
    stored under the network kind's names (``gd_*``: discrete RMSProp; ``gf_loss``: the stable
    flow; ``trace_sigma``: tr X), so the same measures and figures apply."""
    from eoslab.dynamics import central_flow as cf
    from eoslab.dynamics import central_flow_rmsprop as rf

    problem = network_problem(dict(point, model="mlp", blocks=1, block_seeds=[]))
    out = rf.run(problem, point["lr"], point["steps"], beta2=point["beta2"], eps=point["eps"], k=point["k"],
                 substeps=point["substeps"], start=point["start"], seed=point["seed"])
    names = {"loss": "loss", "avg_loss": "avg_loss", "sharpness": "sharpness", "eigs": "eigs",
             "trace_sigma": "sigma2", "n_active": "n_active", "sdcp_residual": "sdcp_residual",
             "gd_loss": "opt_loss", "gd_sharpness": "opt_sharpness", "gd_eigs": "opt_eigs", "gf_loss": "sf_loss",
             "dist_gd_cf": "dist_opt_cf", "dist_gd_gf": "dist_opt_sf"}
    arrays = {key: np.asarray(out[src]) for key, src in names.items()}
    arrays["gd_loss_smoothed"] = cf.smooth(out["opt_loss"], point["window"])
    arrays["lr"] = np.float64(point["lr"])
    arrays["onset"] = np.int64(np.argmax(out["n_active"] > 0) if np.any(out["n_active"] > 0) else -1)
    arrays["max_at_edge"] = np.int64(np.max(out["n_active"]))
    return arrays


register(Kind(name="central_flow.rmsprop", schema=RMSPROP_SCHEMA, run=lambda pts: [simulate_rmsprop(p) for p in pts],
              measures=FLOW_MEASURES,
              figures=lambda results: network_figures(results, rmsprop=True), chunk=1,
              doc="the RMSProp central flow (several eigenvalues of P⁻¹H at the edge) vs discrete RMSProp and the "
                  "stable flow on a tanh MLP",
              version=1))


# ---- the 2-D model ----------------------------------------------------------------------------

Q2D_SCHEMA = {
    "model": {
        "eps": Field(float, 0.02, doc="ε of f = ½(θ₁² − εθ₂²)", static=True, check=_frac),
    },
    "init": {
        "theta1": Field(float, 0.1, doc="θ₁ at the start"),
        "theta2_scaled": Field(float, 2.0, doc="θ₂√ε at the start"),
    },
    "dynamics": {
        "steps_eps": Field(float, 30.0, doc="GD steps = steps_eps/ε + 200 (η = 1)", check=positive),
        "substeps": Field(int, 4, doc="Euler substeps per GD step", static=True, check=positive_int),
    },
}


@x64
def simulate_2d(point: dict) -> dict:
    from eoslab.dynamics import central_flow as cf
    from eoslab.models import quadratic2d
    from eoslab.theory.eos2d import eos_limit

    eps = point["eps"]
    steps = int(point["steps_eps"] / eps) + 200
    p = quadratic2d.problem(eps, [point["theta1"], point["theta2_scaled"] / eps ** 0.5])
    out = cf.run(p, 1.0, steps, k=1, k_max=1, substeps=point["substeps"], seed=point["seed"])
    lim = eos_limit(eps, lr=1.0)
    arrays = {key: np.asarray(out[key]) for key in CURVES if key not in ("eigs", "sdcp_residual")}
    arrays.update(w_cf=out["w_cf"], w_gd=out["w_gd"], w_gf=out["w_gf"],
                  theory_limit=np.float64(lim.eta_lambda), gd_limit=np.float64(np.mean(out["gd_sharpness"][-10:])),
                  cf_limit=np.float64(out["sharpness"][-1]), gd_loss_smoothed=cf.smooth(out["gd_loss"], 20))
    return arrays


def cf_edge_error(runs) -> Measurement:
    """max over the runs whose central flow started below the edge and reached it, of
    |ηS_CF(final) − 2| (the central flow holds the sharpness at 2/η); NaN when none did. (A start
    above the edge is outside the flow's domain: it falls to the edge and may leave it.)"""
    vals = [abs(float(r.arrays["cf_limit"]) - 2.0) for r in runs
            if np.any(r.arrays["n_active"] > 0) and r.arrays["sharpness"][0] < 2.0]
    return Measurement(value=float(max(vals)) if vals else float("nan"), uncertainty=0.0,
                       note=f"{len(vals)} of {len(runs)} runs reached the edge from below")


def gd_theory_error(runs) -> Measurement:
    """max over runs of |ηλ_GD(final) − ηλ∞(exact slow-manifold theory)|."""
    return Measurement(value=float(max(abs(float(r.arrays["gd_limit"] - r.arrays["theory_limit"])) for r in runs)),
                       uncertainty=0.0)


def miss_over_delta(runs) -> Measurement:
    """max over runs of |(S_CF − λ_GD) / δ − 1| with δ = 2/η − λ∞ of the slow-manifold theory:
    whether the central flow's miss of the limit is exactly the slow-manifold correction."""
    vals = [abs((float(r.arrays["cf_limit"]) - float(r.arrays["gd_limit"])) / (2.0 - float(r.arrays["theory_limit"]))
                - 1) for r in runs]
    return Measurement(value=float(max(vals)), uncertainty=0.0)


def miss_over_eps(runs) -> Measurement:
    """(S_CF − λ_GD)/ε at the smallest ε of the selection (→ 1/2 as ε → 0: δ = ε/2 + O(ε²))."""
    r = min(runs, key=lambda r: r.params["eps"])
    return Measurement(value=(float(r.arrays["cf_limit"]) - float(r.arrays["gd_limit"])) / r.params["eps"],
                       uncertainty=0.0)


def figures_2d(results):
    from eoslab.plots.central_flow import plot_2d_axes
    from eoslab.plots.style import figure

    fig, axes = figure(ncols=2, width=3.8, height=3.0)
    plot_2d_axes(axes, [(r.params["eps"], r.arrays) for r in results.runs])
    return [(f"{results.experiment.name}-limits", fig,
             "2-D model: the central flow holds ηS = 2 while exact GD converges to the slow-manifold limit "
             "2 − δ (left: ηλ∞ of each; right: the miss S_CF − λ_GD against δ and ε/2).")]


register(Kind(name="central_flow.quadratic2d", schema=Q2D_SCHEMA, run=lambda pts: [simulate_2d(p) for p in pts],
              measures={"cf_edge_error": cf_edge_error, "gd_theory_error": gd_theory_error,
                        "miss_over_delta": miss_over_delta, "miss_over_eps": miss_over_eps,
                        "distance_ratio": distance_ratio},
              figures=figures_2d, chunk=1,
              doc="the 2-D model of Theorem 1: central flow (held at 2/η) vs exact GD (2/η − δ) over ε",
              version=1))
