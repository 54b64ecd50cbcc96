"""Kind ``networks.train``: one full-batch training run of a network (the ``eoslab train``
setting) per point, with the top Hessian eigenvalues tracked, as the unit of a user sweep
(``docs/sweeps.md``): any of its parameters (``lr``, ``seed``, ``width``, ``depth``,
``momentum``, ``n``, ...) can be a sweep axis.

Stored per run: the per-step arrays of :func:`eoslab.dynamics.train.train` (``loss``,
``grad_norm``, ``hessian_eigs`` (steps, k), ``hessian_residuals``, ``tracked``, ``diverged``)
and the scalars of :func:`eoslab.dynamics.train.summarize`, plus the edge ratios λ₁/edge (ηλ₁/2 for GD)
(``max_edge_ratio``, ``late_edge_ratio``: mean over the last quarter of the tracked steps,
``final_edge_ratio``), so a sweep's summary and figures need no recomputation.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import Problem
from eoslab.data import load as load_data
from eoslab.dynamics import optim
from eoslab.dynamics.batched import train_batch
from eoslab.dynamics.train import summarize, train
from eoslab.errors import MeasureError, available_memory, positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.models.mlp import ACTIVATIONS, PARAMETRISATIONS, TRAINING_COPIES, build, check_size

_nonneg = lambda v: None if v >= 0 else "must be ≥ 0"

#: The optimizers a point may use (:mod:`eoslab.dynamics.optim`); every one can be batched (full or mini-batch).
OPTIMIZERS = ("gd", "momentum", "nesterov", "rmsprop", "adam")

SCHEMA = {
    "model": {
        "model": Field(str, "mlp", choices=("mlp", "cnn"), doc="network: mlp or cnn", static=True),
        "depth": Field(int, 2, doc="hidden layers (mlp) or conv blocks (cnn)", static=True, check=positive_int),
        "width": Field(int, 32, doc="hidden units (mlp) or channels (cnn)", static=True, check=positive_int),
        "activation": Field(str, "tanh", choices=tuple(ACTIVATIONS), static=True),
        "parametrisation": Field(str, "standard", choices=PARAMETRISATIONS, static=True),
        "dtype": Field(str, "float32", choices=("float32", "float64"), doc="parameter and data dtype",
                       static=True),
    },
    "data": {
        "data": Field(str, "synthetic", choices=("synthetic", "cifar10", "digits"), static=True),
        "data_dir": Field(str, "", doc="CIFAR-10 folder (data_batch_1..5, ...); unused for synthetic", static=True),
        "n": Field(int, 256, doc="training examples (the first n)", static=True, check=positive_int),
        "d": Field(int, 16, doc="synthetic input dimension", static=True, check=positive_int),
        "classes": Field(int, 0, doc="synthetic classes (0: scalar regression)", static=True,
                         check=lambda v: None if v == 0 or v >= 2 else "must be 0 (regression) or ≥ 2"),
        "target_scale": Field(float, 4.0, doc="std of the synthetic regression targets", check=positive,
                              static=True),
        "loss": Field(str, "mse", choices=("mse", "cross_entropy"), static=True),
        "label_scale": Field(float, 1.0, doc="digits, cifar10: the one-hot targets are label_scale·e_c (MSE; "
                             "targets larger than the initial outputs make the network grow them, and sharpen)",
                             check=positive, static=True),
    },
    "dynamics": {
        "optimizer": Field(str, "gd", choices=OPTIMIZERS,
                           doc="gd; momentum or nesterov (coefficient `momentum`); rmsprop (`b2`, `opt_eps`); "
                               "adam (`b1`, `b2`, `opt_eps`): eoslab.dynamics.optim"),
        "lr": Field(float, 0.05, doc="step size η", check=positive),
        "momentum": Field(float, 0.0, doc="momentum coefficient β ∈ [0, 1) (optimizer = momentum, nesterov)",
                          check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
        "b1": Field(float, 0.9, doc="Adam's first-moment decay β₁ ∈ [0, 1)",
                    check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
        "b2": Field(float, 0.999, doc="Adam's / RMSProp's second-moment decay β₂ ∈ [0, 1)",
                    check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
        "opt_eps": Field(float, 1e-8, doc="Adam's / RMSProp's ε (added to √v)", check=positive),
        "batch_size": Field(int, 0, doc="mini-batch size of SGD (0: full batch); batch sharpness recorded too",
                            static=True, check=lambda v: None if v >= 0 else "must be ≥ 0 (0: full batch)"),
        "steps": Field(int, 200, doc="training steps", static=True, check=positive_int),
        "k": Field(int, 2, doc="tracked top Hessian eigenvalues", static=True, check=positive_int),
        "track_every": Field(int, 1, doc="spectra every this many steps", static=True, check=positive_int),
        "tol": Field(float, 1e-3, doc="relative accuracy of the tracked eigenvalues", check=positive, static=True),
    },
}

#: Points per call of ``run`` (members of one batch when :func:`batching`).
BATCH = 16

PER_STEP = ("loss", "grad_norm", "accuracy", "hessian_eigs", "hessian_residuals", "hessian_products", "tracked",
            "edge", "preconditioned_eigs", "preconditioned_residuals", "batch_loss", "batch_sharpness",
            "batch_sharpness_se", "diverged")


def problem(point: dict) -> Problem:
    """The network, data and θ₀ of one point (data and initialisation drawn from ``seed``)."""
    classes = point["classes"] or None
    kw = {"d": point["d"], "target_scale": point["target_scale"]} if point["data"] == "synthetic" else {}
    ds = load_data(point["data"], n=point["n"], data_dir=point["data_dir"] or None, classes=classes,
                   seed=point["seed"], dtype=point["dtype"], **kw)
    net = build(point["model"], depth=point["depth"], width=point["width"], activation=point["activation"],
                out_dim=ds.out_dim, parametrisation=point["parametrisation"],
                image_shape=ds.image_shape or (3, 32, 32))
    check_size(net, ds.in_dim, jnp.dtype(point["dtype"]))
    params = net.init(jax.random.PRNGKey(point["seed"]), ds.in_dim, dtype=jnp.dtype(point["dtype"]))
    y = jnp.asarray(ds.y) if point["data"] == "synthetic" else jnp.asarray(ds.y) * point.get("label_scale", 1.0)
    return Problem.from_model(net, params, jnp.asarray(ds.x), y, loss=point["loss"])


def edge_ratios(traj: dict, lr: float) -> dict:
    """λ₁/edge at the tracked steps, with the optimizer's own edge (2/η for GD, 2(1+β)/η for
    heavy-ball: the ``edge`` key): its max, its mean over the last quarter, its last value
    (NaN when nothing finite was tracked, e.g. a run that diverged at once)."""
    key = "preconditioned_eigs" if "preconditioned_eigs" in traj else "hessian_eigs"  # what the edge bounds
    e = np.asarray(traj[key], np.float64)[:, 0]
    edge = np.asarray(traj["edge"], np.float64) if "edge" in traj else 2.0 / lr
    r = e / edge
    r = r[np.isfinite(r)]
    if r.size == 0:
        return {"max_edge_ratio": np.nan, "late_edge_ratio": np.nan, "final_edge_ratio": np.nan}
    return {"max_edge_ratio": float(r.max()), "late_edge_ratio": float(r[-max(r.size // 4, 1):].mean()),
            "final_edge_ratio": float(r[-1])}


def results(traj: dict, lr: float) -> dict:
    """What a run stores: the per-step arrays and the scalars (NumPy)."""
    out = {k: np.asarray(traj[k]) for k in PER_STEP if k in traj}
    s = summarize(traj, "hessian")
    for key in ("final_loss", "min_loss", "max_sharpness", "initial_sharpness", "crossings", "steps_above_edge",
                "diverged", "seconds", "final_accuracy"):
        if key in s:
            out[key] = np.asarray(s[key])
    for key, v in edge_ratios(traj, lr).items():
        out[key] = np.asarray(v, np.float64)
    return out


def check_point(point: dict) -> str | None:
    """What the fields cannot check alone."""
    if point["batch_size"] > point["n"]:
        return f"batch_size {point['batch_size']} is larger than the number of examples n = {point['n']}"
    # the network's size from its widths (an upper bound: inputs of at most 3,072 numbers, 10
    # outputs), so that a sweep with one network too large to train is refused before any run
    w, depth = point["width"], point["depth"]
    in_dim = {"synthetic": point.get("d", 64), "digits": 64}.get(point["data"], 3072)
    P = (9 * w * (3 + (depth - 1) * w) if point["model"] == "cnn" else in_dim * w + (depth - 1) * w * w) + 11 * w
    need, avail = TRAINING_COPIES * jnp.dtype(point["dtype"]).itemsize * P, available_memory()
    if avail is not None and need > avail:
        return (f"the network (depth {depth}, width {w}: about {P:,} parameters) needs about {need / 2**30:.3g} GiB "
                f"of memory, {avail / 2**30:.3g} GiB available")
    return None


def optimizer(point: dict):
    """The point's optimizer (None for gd / momentum: ``train``'s own heavy-ball path)."""
    name, lr = point["optimizer"], point["lr"]
    if name == "nesterov":
        return optim.nesterov(lr, point["momentum"])
    if name == "rmsprop":
        return optim.rmsprop(lr, point["b2"], point["opt_eps"])
    if name == "adam":
        return optim.adam(lr, point["b1"], point["b2"], point["opt_eps"])
    return None


def simulate(point: dict) -> dict:
    """One training run of ``point`` (adaptive optimizers: the preconditioned Hessian is
    tracked too, and the edge ratios are of the preconditioned sharpness)."""
    kw = dict(k=point["k"], track_every=point["track_every"], track=("hessian",), tol=point["tol"],
              seed=point["seed"], batch_size=point["batch_size"] or None)
    opt = optimizer(point)
    if opt is None:
        mom = point["momentum"] if point["optimizer"] == "momentum" else 0.0
        traj, _ = train(problem(point), point["lr"], point["steps"], momentum=mom, **kw)
    else:
        traj, _ = train(problem(point), steps=point["steps"], optimizer=opt, **kw)
    return results(traj, point["lr"])


def simulate_batch(points: list[dict]) -> list[dict]:
    """The points of one chunk (equal static parameters: model, data sizes, steps, spectra
    settings, ``batch_size``: mini-batch members draw their own batches from their seeds) trained
    by :func:`eoslab.dynamics.batched.train_batch`, one batch per optimizer
    kind (gd and momentum together): members differ by ``lr``, the optimizer's numbers and
    ``seed`` (one shared problem when every seed is the same, else one per member). The arrays
    agree with :func:`simulate`'s up to rounding."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault("momentum" if optimizer(p) is None else p["optimizer"], []).append(i)
    out = [None] * len(points)
    for members in groups.values():
        pts = [points[i] for i in members]
        p0, seeds = pts[0], [p["seed"] for p in pts]
        probs = problem(p0) if len(set(seeds)) == 1 else [problem(p) for p in pts]
        kw = dict(k=p0["k"], track_every=p0["track_every"], track=("hessian",), tol=p0["tol"], seed=seeds,
                  batch_size=p0["batch_size"] or None)
        if optimizer(p0) is None:
            moms = [p["momentum"] if p["optimizer"] == "momentum" else 0.0 for p in pts]
            trajs, _ = train_batch(probs, [p["lr"] for p in pts], p0["steps"], momentum=moms, **kw)
        else:
            trajs, _ = train_batch(probs, steps=p0["steps"], optimizer=[optimizer(p) for p in pts], **kw)
        for i, t, p in zip(members, trajs, pts):
            out[i] = results(t, p["lr"])
    return out


def batching() -> bool:
    """Whether a chunk of points is trained as one batch (default: yes). On accelerators many
    members share each kernel launch; on a CPU the batch is split into one part per core, the
    parts advanced on threads at once, so a sweep uses every core, and a batch costs no more
    CPU time than its members one after the other (``benchmarks/batched_train.py``).
    ``EOSLAB_BATCH=0`` trains the points one after the other (``1`` forces batching)."""
    forced = os.environ.get("EOSLAB_BATCH")
    if forced is not None:
        return forced.strip() not in ("", "0")
    return True


def run(points: list[dict]) -> list[dict]:
    if len(points) > 1 and batching() and len({p["batch_size"] for p in points}) == 1:
        return simulate_batch(points)
    return [simulate(p) for p in points]


def max_edge_ratio(runs) -> Measurement:
    """max_t λ₁(t)/edge of one run (ηλ₁/2 for GD; tracker accuracy: ``tol`` relative)."""
    v = float(runs[0].scalars()["max_edge_ratio"])
    return Measurement(v, runs[0].params["tol"] * v)


def _tracked_edge_ratio(run) -> np.ndarray:
    """λ₁/edge at the tracked steps of one stored run (finite values only)."""
    a = run.arrays
    key = "preconditioned_eigs" if "preconditioned_eigs" in a else "hessian_eigs"
    edge = np.asarray(a["edge"], np.float64) if "edge" in a else 2.0 / run.params["lr"]
    r = np.asarray(a[key], np.float64)[:, 0] / edge
    return r[np.isfinite(r)]


def initial_edge_ratio(runs) -> Measurement:
    """λ₁/edge at θ₀ (ηλ₁/2 for GD: below 1, the run starts below the edge)."""
    r = _tracked_edge_ratio(runs[0])
    if r.size == 0:
        raise MeasureError("no finite tracked eigenvalue in the run")
    return Measurement(float(r[0]), runs[0].params["tol"] * float(r[0]))


def sharpening_ratio(runs) -> Measurement:
    """Progressive sharpening: mean λ₁ over the last quarter of the tracked steps over λ₁(θ₀)."""
    r = _tracked_edge_ratio(runs[0])
    if r.size == 0 or not r[0] > 0:
        raise MeasureError("no positive tracked eigenvalue at θ₀")
    v = float(r[-max(r.size // 4, 1):].mean() / r[0])
    return Measurement(v, 2 * runs[0].params["tol"] * v)


def late_edge_ratio(runs) -> Measurement:
    """Mean of λ₁/edge over the last quarter of the tracked steps (1 at the edge of stability)."""
    v = float(runs[0].scalars()["late_edge_ratio"])
    return Measurement(v, runs[0].params["tol"] * v)


register(Kind(
    name="networks.train", schema=SCHEMA, run=run,
    measures={"max_edge_ratio": max_edge_ratio, "late_edge_ratio": late_edge_ratio,
              "initial_edge_ratio": initial_edge_ratio, "sharpening_ratio": sharpening_ratio},
    chunk=BATCH if batching() else 1, version=2, check_point=check_point,
    doc="One full-batch training run of an MLP/CNN with the top Hessian eigenvalues tracked at every step "
        "(the unit of a user sweep: lr, seed, width, depth, momentum, n, ... as axes)."))
