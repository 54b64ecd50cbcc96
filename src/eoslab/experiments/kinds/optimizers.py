"""Every optimizer at its own edge (docs/optimizers.md).

Kind ``optim.thresholds``: for one optimizer per run, random SPD quadratics (preconditioner frozen
for RMSProp / Adam), the divergence threshold found by bisection on η of the optimizer's own
dynamics against the threshold its reported edge predicts (:mod:`eoslab.dynamics.thresholds`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics.thresholds import bisect_threshold, predicted_threshold, random_quadratic
from eoslab.errors import positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register

OPTIMIZERS = ("gd", "heavy_ball", "nesterov", "rmsprop", "adam")
_unit = lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"

THRESHOLD_SCHEMA = {
    "model": {
        "dim": Field(int, 8, doc="dimension of the random quadratics", static=True, check=positive_int),
        "cond": Field(float, 20.0, doc="condition number of A (eigenvalues log-spaced in [1, cond])", check=positive),
        "quadratics": Field(int, 3, doc="random quadratics (and frozen preconditioners) per optimizer",
                            check=positive_int),
    },
    "dynamics": {
        "optimizer": Field(str, "gd", choices=OPTIMIZERS, doc="the optimizer under test"),
        "beta": Field(float, 0.9, doc="momentum β (heavy_ball, nesterov) and Adam's β₁", check=_unit),
        "steps": Field(int, 3000, doc="steps per trial η (growth measured over the second half)", static=True,
                       check=positive_int),
        "rtol": Field(float, 1e-3, doc="relative width of the final bisection bracket", check=positive),
    },
}


def run_thresholds(points: list[dict]) -> list[dict]:
    out = []
    for p in points:
        hyper = {"beta": p["beta"], "b1": p["beta"]}
        key = jax.random.PRNGKey(p["seed"])
        pred, meas = [], []
        for i in range(p["quadratics"]):
            k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
            A = random_quadratic(k1, p["dim"], p["cond"], jnp.float64)
            prec = jnp.exp(jax.random.uniform(k2, (p["dim"],), jnp.float64, -1.0, 1.0))
            pred.append(predicted_threshold(p["optimizer"], A, hyper, prec))
            meas.append(bisect_threshold(p["optimizer"], A, hyper, prec, key=k3, steps=p["steps"], rtol=p["rtol"]))
        out.append({"predicted": np.asarray(pred), "measured": np.asarray(meas)})
    return out


def max_rel_error(runs) -> Measurement:
    """max over runs and quadratics of |η_bisection − η_edge| / η_edge (bisection bracket: rtol)."""
    errs = [np.max(np.abs(r.arrays["measured"] - r.arrays["predicted"]) / r.arrays["predicted"]) for r in runs]
    return Measurement(float(max(errs)), float(runs[0].params["rtol"]))


register(Kind(
    name="optim.thresholds", schema=THRESHOLD_SCHEMA, run=run_thresholds,
    measures={"max_rel_error": max_rel_error}, chunk=1, version=1,
    doc="Bisection on η of each optimizer's own dynamics on random quadratics (frozen preconditioner) "
        "against the threshold its reported edge predicts."))
