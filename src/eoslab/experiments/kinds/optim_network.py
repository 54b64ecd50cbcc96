"""Kind ``optim.network``: a tanh MLP on eoslab's synthetic regression data trained by any built-in
optimizer, full batch or mini-batch (:func:`eoslab.dynamics.train.train`), with the top Hessian
eigenvalue (and, for Adam / RMSProp, the preconditioned one) tracked at every ``track_every``-th
step against the optimizer's own edge, and, with a mini-batch, the batch sharpness.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import Problem
from eoslab.data import synthetic
from eoslab.dynamics import optim
from eoslab.dynamics.train import train
from eoslab.errors import MeasureError, positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.experiments.kinds.optimizers import OPTIMIZERS
from eoslab.models.mlp import MLP

_unit = lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"


NETWORK_SCHEMA = {
    "model": {
        "depth": Field(int, 2, doc="hidden layers", static=True, check=positive_int),
        "width": Field(int, 64, doc="hidden units", static=True, check=positive_int),
    },
    "data": {
        "n": Field(int, 200, doc="synthetic examples", static=True, check=positive_int),
        "d": Field(int, 16, doc="input dimension", static=True, check=positive_int),
        "target_scale": Field(float, 5.0, doc="std of the regression targets", check=positive, static=True),
        "alpha": Field(float, 1.0, doc="power-law exponent of the input covariance (0: isotropic)", static=True,
                       check=lambda v: None if v >= 0 else "must be ≥ 0"),
    },
    "dynamics": {
        "optimizer": Field(str, "gd", choices=OPTIMIZERS, doc="the optimizer", static=True),
        "lr": Field(float, 0.05, doc="step size η", check=positive),
        "beta": Field(float, 0.9, doc="momentum β (heavy_ball, nesterov) or Adam's β₁", check=_unit),
        "b2": Field(float, 0.999, doc="second-moment decay of Adam / RMSProp", check=_unit),
        "eps": Field(float, 1e-8, doc="ε of Adam / RMSProp", check=lambda v: None if v >= 0 else "must be ≥ 0"),
        "batch_size": Field(int, 0, doc="mini-batch size (0: full batch)", static=True,
                            check=lambda v: None if v >= 0 else "must be ≥ 0"),
        "steps": Field(int, 600, doc="training steps", static=True, check=positive_int),
        "track_every": Field(int, 1, doc="spectra every this many steps", static=True, check=positive_int),
        "tol": Field(float, 1e-3, doc="relative accuracy of the tracked eigenvalues", check=positive, static=True),
        "onset": Field(float, 0.95, doc="the EoS phase starts where the edge ratio first reaches this",
                       check=positive),
    },
}


def _optimizer(p):
    name = p["optimizer"]
    if name == "gd":
        return optim.gd(p["lr"])
    if name in ("heavy_ball", "nesterov"):
        return getattr(optim, name)(p["lr"], p["beta"])
    if name == "rmsprop":
        return optim.rmsprop(p["lr"], p["b2"], p["eps"])
    return optim.adam(p["lr"], p["beta"], p["b2"], p["eps"])


def simulate_network(p: dict) -> dict:
    ds = synthetic(p["n"], p["d"], target_scale=p["target_scale"], alpha=p["alpha"], seed=p["seed"])
    net = MLP(p["depth"], p["width"], "tanh", 1)
    params = net.init(jax.random.PRNGKey(p["seed"]), ds.in_dim, jnp.float32)
    problem = Problem.from_model(net, params, jnp.asarray(ds.x), jnp.asarray(ds.y))
    traj, _ = train(problem, None, p["steps"], optimizer=_optimizer(p), batch_size=p["batch_size"] or None,
                    k=1, track_every=p["track_every"], track=("hessian",), tol=p["tol"], seed=p["seed"])
    keep = ("loss", "hessian_eigs", "edge", "edge_ratio", "tracked", "diverged", "preconditioned_eigs",
            "batch_sharpness", "batch_sharpness_se")
    return {key: np.asarray(traj[key]) for key in keep if key in traj}


def run_network(points: list[dict]) -> list[dict]:
    return [simulate_network(p) for p in points]  # one network per call


def _phase(run, key="edge_ratio"):
    """The EoS phase's values of ``key`` at tracked steps: from the first step where the edge
    ratio reaches ``onset`` on (MeasureError if it never does)."""
    a = run.arrays
    t = np.nonzero(a["tracked"] & ~a["diverged"])[0]
    ratio = a["edge_ratio"][t]
    hit = np.nonzero(ratio >= run.params["onset"])[0]
    if hit.size == 0:
        raise MeasureError(f"run {run.id}: the edge ratio never reached {run.params['onset']} (no EoS phase)")
    return t[hit[0]:]


def _one(runs):
    if len(runs) != 1:
        raise MeasureError(f"this measure needs exactly one run, got {len(runs)} (use `where`)")
    return runs[0]


def eos_mean_ratio(runs) -> Measurement:
    """Time average over the EoS phase of λ₁(stability operator)/edge; uncertainty: its std / √n."""
    r = _one(runs)
    v = r.arrays["edge_ratio"][_phase(r)]
    return Measurement(float(np.mean(v)), float(np.std(v) / np.sqrt(v.size)))


def late_mean_ratio(runs) -> Measurement:
    """Mean of λ₁(stability operator)/edge over the last quarter of the tracked steps (the settled
    EoS phase, as ``networks.eos``'s late_sharpness); uncertainty: its standard deviation there."""
    r = _one(runs)
    a = r.arrays
    t = np.nonzero(a["tracked"] & ~a["diverged"])[0]
    v = a["edge_ratio"][t[t >= 3 * a["loss"].shape[0] // 4]]
    if v.size == 0:
        raise MeasureError(f"run {r.id}: no tracked finite step in the last quarter")
    return Measurement(float(np.mean(v)), float(np.std(v)))


def eos_median_ratio(runs) -> Measurement:
    """Median over the EoS phase of λ₁(stability operator)/edge."""
    r = _one(runs)
    v = r.arrays["edge_ratio"][_phase(r)]
    return Measurement(float(np.median(v)), 0.0)


def eos_gd_ratio(runs) -> Measurement:
    """Time average over the EoS phase of ηλ₁(∇²L)/2: λ₁ against GD's edge 2/η."""
    r = _one(runs)
    t = _phase(r)
    v = r.params["lr"] * r.arrays["hessian_eigs"][t, 0] / 2
    return Measurement(float(np.mean(v)), float(np.std(v) / np.sqrt(v.size)))


def raw_deviation(runs) -> Measurement:
    """|median over the EoS phase of λ₁(∇²L)/edge − 1|: how far the *raw* sharpness is from the
    adaptive optimizer's edge (its preconditioned sharpness is the one at it)."""
    r = _one(runs)
    t = _phase(r)
    v = r.arrays["hessian_eigs"][t, 0] / r.arrays["edge"][t]
    return Measurement(float(abs(np.median(v) - 1)), 0.0)


def _late(run, values):
    t = np.nonzero(run.arrays["tracked"] & ~run.arrays["diverged"])[0]
    t = t[t >= run.arrays["loss"].shape[0] // 2]
    return values[t]


def batch_sharpness_ratio(runs) -> Measurement:
    """Median over the second half of the run of batch sharpness / (2/η); uncertainty: the spread
    (standard deviation) of the tracked values there, which includes their Monte Carlo error."""
    r = _one(runs)
    v = _late(r, r.arrays["batch_sharpness"]) * r.params["lr"] / 2
    return Measurement(float(np.median(v)), float(np.std(v)))


def full_sharpness_ratio(runs) -> Measurement:
    """Median over the second half of the run of λ₁(∇²L) / (2/η) (the full-batch sharpness)."""
    r = _one(runs)
    v = _late(r, r.arrays["hessian_eigs"][:, 0]) * r.params["lr"] / 2
    return Measurement(float(np.median(v)), 0.0)


def full_sharpness_late_max(runs) -> Measurement:
    """Maximum over the second half of the run of λ₁(∇²L) / (2/η): below 1 when the full-batch
    sharpness stays below GD's edge."""
    r = _one(runs)
    v = _late(r, r.arrays["hessian_eigs"][:, 0]) * r.params["lr"] / 2
    return Measurement(float(np.max(v)), 0.0)


def initial_batch_sharpness_ratio(runs) -> Measurement:
    """Batch sharpness / (2/η) at the first tracked step (before any sharpening), ± its standard error."""
    r = _one(runs)
    a = r.arrays
    t = np.nonzero(a["tracked"])[0][0]
    eta2 = r.params["lr"] / 2
    return Measurement(float(a["batch_sharpness"][t] * eta2), float(a["batch_sharpness_se"][t] * eta2))


def full_sharpness_batch_slope(runs) -> Measurement:
    """Full-batch sharpness ratio (second-half median of ηλ₁/2) of the largest batch minus that of
    the smallest: > 0 when a smaller batch gives a lower full-batch sharpness."""
    if len(runs) < 2:
        raise MeasureError("needs runs with at least two batch sizes")
    runs = sorted(runs, key=lambda r: r.params["batch_size"])
    lo, hi = full_sharpness_ratio(runs[:1]).value, full_sharpness_ratio(runs[-1:]).value
    return Measurement(float(hi - lo), 0.0)


EDGE_FORMULA = {"gd": "2/η", "heavy_ball": "2(1+β)/η", "nesterov": "2(1+β)/((1+2β)η)",
                "rmsprop": "2/η on λ(P⁻¹H)", "adam": "(2+2β₁)/((1−β₁)η) on λ(P⁻¹H)"}


def network_figures(results):
    from eoslab.plots.style import EDGE_COLOR, figure

    out = []
    for r in results.runs:
        a, p = r.arrays, r.params
        t = np.nonzero(a["tracked"])[0]
        fig, ax = figure()
        ax.plot(t, a["hessian_eigs"][t, 0], lw=0.8, color="#1f77b4", label="λ₁(∇²L)")
        if "preconditioned_eigs" in a:
            ax.plot(t, a["preconditioned_eigs"][t, 0], lw=0.8, color="#d62728", label="λ₁(P⁻¹∇²L)")
        if "batch_sharpness" in a:
            ax.plot(t, a["batch_sharpness"][t], lw=0.6, color="#8c564b", label="batch sharpness")
        ax.plot(np.arange(a["edge"].size), a["edge"], ls="--", color=EDGE_COLOR, lw=1.0, label="edge")
        if p["optimizer"] != "gd":
            ax.axhline(2 / p["lr"], ls=":", color="k", lw=0.8, label="2/η")
        ax.set_xlabel("step")
        ax.set_ylabel("sharpness")
        formula = EDGE_FORMULA.get(p["optimizer"])
        ax.set_title(f"{p['optimizer']}, η = {p['lr']:g}" + (f", edge {formula}" if formula else ""), fontsize=9)
        ax.set_yscale("log" if p["optimizer"] in ("adam", "rmsprop") else "linear")
        ax.legend(fontsize=7)
        b = f", batch {p['batch_size']}" if p["batch_size"] else ", full batch"
        # stable names (no run hash); "." would be taken for a file suffix
        name = f"{results.experiment.name}_{p['optimizer']}_lr{p['lr']:g}".replace(".", "p")
        name += f"_b{p['batch_size']}" if p["batch_size"] else ""
        out.append((name, fig,
                    f"{p['optimizer']} (η = {p['lr']}{b}) on a {p['depth']}×{p['width']} tanh MLP: the sharpness "
                    "the optimizer's edge bounds, with the edge dashed."))
    return out


register(Kind(
    name="optim.network", schema=NETWORK_SCHEMA, run=run_network,
    measures={"eos_mean_ratio": eos_mean_ratio, "late_mean_ratio": late_mean_ratio, "eos_median_ratio": eos_median_ratio,
              "eos_gd_ratio": eos_gd_ratio, "raw_deviation": raw_deviation,
              "batch_sharpness_ratio": batch_sharpness_ratio, "full_sharpness_ratio": full_sharpness_ratio,
              "full_sharpness_batch_slope": full_sharpness_batch_slope,
              "full_sharpness_late_max": full_sharpness_late_max,
              "initial_batch_sharpness_ratio": initial_batch_sharpness_ratio},
    figures=network_figures, chunk=1, version=1,
    doc="A tanh MLP trained by any built-in optimizer (full batch or mini-batch) with the sharpness its "
        "edge bounds tracked against that edge."))
