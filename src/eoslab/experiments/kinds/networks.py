"""The paper's "connection with deep models": a 2-hidden-layer tanh network trained with
full-batch GD sharpens into the edge of stability (λ₁ crosses 2/η several times, λ₂ stays
below), and its second-order Taylor model around θ₀ trained side by side.

Kind ``networks.eos``: one run per point (a network is not vmapped over configurations:
each run is one :func:`eoslab.dynamics.train.compare_taylor` or :func:`~eoslab.dynamics.train.train`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import Problem
from eoslab.data import synthetic
from eoslab.dynamics.train import compare_taylor, crossings, train
from eoslab.errors import positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.models.mlp import MLP

SCHEMA = {
    "model": {
        "depth": Field(int, 2, doc="hidden layers", static=True, check=positive_int),
        "width": Field(int, 256, doc="hidden units", static=True, check=positive_int),
        "activation": Field(str, "tanh", choices=("tanh", "relu", "elu"), static=True),
    },
    "data": {
        "n": Field(int, 1000, doc="synthetic examples", static=True, check=positive_int),
        "d": Field(int, 64, doc="input dimension", static=True, check=positive_int),
        "target_scale": Field(float, 4.0, doc="std of the regression targets", check=positive),
    },
    "dynamics": {
        "lr": Field(float, 0.02, doc="step size η", check=positive),
        "steps": Field(int, 2000, doc="GD steps", static=True, check=positive_int),
        "k": Field(int, 2, doc="tracked top eigenvalues", static=True, check=positive_int),
        "track_every": Field(int, 1, doc="spectra every this many steps", static=True, check=positive_int),
        "taylor": Field(bool, True, doc="also train the second-order Taylor model", static=True),
    },
}


def simulate(point: dict) -> dict:
    """One run: the network (and its Taylor model) on the synthetic data, float32."""
    ds = synthetic(point["n"], point["d"], target_scale=point["target_scale"], seed=point["seed"])
    net = MLP(point["depth"], point["width"], point["activation"], 1)
    params = net.init(jax.random.PRNGKey(point["seed"]), ds.in_dim, jnp.float32)
    problem = Problem.from_model(net, params, jnp.asarray(ds.x), jnp.asarray(ds.y))
    kw = dict(k=point["k"], track_every=point["track_every"], track=("hessian",), seed=point["seed"])
    out = {}
    if point["taylor"]:
        cmp = compare_taylor(problem, point["lr"], point["steps"], **kw)
        net_tr, tay = cmp["network"], cmp["taylor"]
        out["loss_divergence_step"] = np.int64(cmp["loss_divergence_step"])
        out["sharpness_divergence_step"] = np.int64(cmp["sharpness_divergence_step"])
        for key in ("loss", "hessian_eigs", "nonlinear_norm", "linear_norm", "diverged"):
            out[f"taylor_{key}"] = np.asarray(tay[key])
        for key in ("nonlinear_norm", "linear_norm", "nonlinear_actual"):
            out[key] = np.asarray(net_tr[key])
    else:
        net_tr, _ = train(problem, point["lr"], point["steps"], **kw)
    for key in ("loss", "hessian_eigs", "hessian_residuals", "hessian_products", "tracked", "edge", "diverged"):
        out[key] = np.asarray(net_tr[key])
    out["seconds"] = np.float64(net_tr.meta["seconds"])
    return out


def run(points: list[dict]) -> list[dict]:
    return [simulate(p) for p in points]  # chunk = 1: one network per call


def _edge_ratio(run, col: int, key: str = "hessian_eigs") -> np.ndarray:
    """λ/edge at the tracked steps (edge = 2/η: GD)."""
    e = np.asarray(run.arrays[key], np.float64)[:, col]
    edge = np.asarray(run.arrays["edge"], np.float64) if "edge" in run.arrays else 2.0 / run.params["lr"]
    ratio = e / edge
    return ratio[np.isfinite(ratio)]


def initial_sharpness(runs) -> Measurement:
    """ηλ₁/2 at step 0 (exact up to the tracker's tolerance, 1e-3 relative)."""
    v = _edge_ratio(runs[0], 0)[0]
    return Measurement(v, 1e-3 * v)


def max_sharpness(runs) -> Measurement:
    """max_t ηλ₁(t)/2 over the run."""
    v = float(np.max(_edge_ratio(runs[0], 0)))
    return Measurement(v, 1e-3 * v)


def late_sharpness(runs) -> Measurement:
    """Mean of ηλ₁/2 over the last quarter of the run (at EoS it hovers at 1); uncertainty:
    its standard deviation there."""
    v = _edge_ratio(runs[0], 0)
    tail = v[-max(len(v) // 4, 1):]
    return Measurement(float(np.mean(tail)), float(np.std(tail)))


def edge_crossings(runs) -> Measurement:
    """Number of upward crossings of 2/η by λ₁ (a count: exact)."""
    return Measurement(crossings(_edge_ratio(runs[0], 0), 1.0))


def max_second(runs) -> Measurement:
    """max_t ηλ₂(t)/2."""
    v = float(np.max(_edge_ratio(runs[0], 1)))
    return Measurement(v, 1e-3 * v)


def taylor_max_sharpness(runs) -> Measurement:
    """max_t ηλ₁/2 of the Taylor model."""
    v = float(np.max(_edge_ratio(runs[0], 0, "taylor_hessian_eigs")))
    return Measurement(v, 1e-3 * v)


def taylor_agreement_steps(runs) -> Measurement:
    """Steps during which the Taylor model's loss stays within 10 % of the network's
    (the loss divergence step; the run length if they never part)."""
    s = int(runs[0].arrays["loss_divergence_step"])
    return Measurement(s if s >= 0 else len(runs[0].arrays["loss"]))


def figures(results):
    from eoslab.plots.networks import eos_panels

    out = []
    for j, r in enumerate(results.runs):
        a, lr = r.arrays, r.params["lr"]
        has_t = "taylor_loss" in a
        fig = eos_panels(a, lr)
        p = r.params
        name = "network_eos" if len(results.runs) == 1 else f"network_eos_{j}"  # stable: no run hash
        out.append((name, fig,
                    f"{p['depth']}-hidden-layer {p['activation']} network, width {p['width']}, synthetic data "
                    f"(n={p['n']}), full-batch GD at η = {lr}: loss, top-2 Hessian eigenvalues with 2/η"
                    + (", and the second-order Taylor model around θ₀ with the non-linear dynamical "
                       "contribution ‖½Q(δ,δ)‖/‖Jδ‖ of each step" if has_t else "")))
    return out


register(Kind(
    name="networks.eos", schema=SCHEMA, run=run,
    measures={"initial_sharpness": initial_sharpness, "max_sharpness": max_sharpness,
              "late_sharpness": late_sharpness, "edge_crossings": edge_crossings, "max_second": max_second,
              "taylor_max_sharpness": taylor_max_sharpness, "taylor_agreement_steps": taylor_agreement_steps},
    predictions={}, figures=figures, chunk=1, version=2,
    doc="Full-batch GD of a tanh MLP on synthetic data with the top Hessian eigenvalues tracked at "
        "every step (progressive sharpening into the edge of stability), and its Taylor model."))
