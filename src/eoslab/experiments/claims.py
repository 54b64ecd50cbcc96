"""Claim evaluation: measured vs predicted, with the tolerance rule of :class:`~eoslab.experiments.schema.Claim`."""

from __future__ import annotations

import dataclasses
import math
import traceback

from eoslab.errors import EoslabError, MeasureError
from eoslab.experiments.registry import Measurement
from eoslab.experiments.runner import ExperimentResults
from eoslab.experiments.schema import Claim


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    experiment: str
    claim: Claim
    measured: Measurement | None
    predicted: Measurement | None
    passed: bool
    error: str = ""      # why the claim could not be evaluated (counts as FAIL)

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def allowed(self) -> float:
        """The tolerance actually applied: ``tolerance + sigmas · combined uncertainty``."""
        if self.measured is None or self.predicted is None:
            return self.claim.tolerance
        u = math.hypot(self.measured.uncertainty, self.predicted.uncertainty)
        return self.claim.tolerance + self.claim.sigmas * u


def _as_measurement(x) -> Measurement:
    return x if isinstance(x, Measurement) else Measurement(float(x), 0.0)


def decide(relation: str, measured: float, predicted: float, allowed: float) -> bool:
    """The pass rule; any non-finite number fails."""
    if not all(math.isfinite(v) for v in (measured, predicted, allowed)):
        return False
    if relation == "approx":
        return abs(measured - predicted) <= allowed
    if relation == "le":
        return measured <= predicted + allowed
    if relation == "ge":
        return measured >= predicted - allowed
    raise EoslabError(f"unknown claim relation {relation!r}; expected approx, le or ge")


def evaluate(results: ExperimentResults) -> list[ClaimResult]:
    """Every claim of the experiment, in config order. A measure or prediction that raises
    gives a FAIL with the error, so one broken claim never hides the others."""
    out = []
    for c in results.experiment.claims:
        runs = results.select(**c.where)
        try:
            if not runs:
                raise MeasureError(f"no run matches where = {c.where}")
            m = _as_measurement(results.kind.measures[c.measure](runs))
            p = (Measurement(c.predicted) if c.predicted is not None
                 else _as_measurement(results.kind.predictions[c.predict](runs)))
        except Exception as e:  # noqa: BLE001 - reported as a failed claim
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            out.append(ClaimResult(results.experiment.name, c, None, None, False, tb))
            continue
        r = ClaimResult(results.experiment.name, c, m, p, False)
        out.append(dataclasses.replace(r, passed=decide(c.relation, m.value, p.value, r.allowed)))
    return out
