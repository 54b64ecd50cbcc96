"""Display strings of numbers and claim rows (shared by the markdown, the HTML page and the CLI)."""

from __future__ import annotations

import math

from eoslab.experiments.claims import ClaimResult


def _decimals(*scales: float) -> int | None:
    """Decimals that resolve the smallest positive finite scale with 2 significant digits."""
    pos = [s for s in scales if s is not None and math.isfinite(s) and s > 0]
    if not pos:
        return None
    return int(min(max(-math.floor(math.log10(min(pos))) + 1, 0), 12))


def fmt(value: float, decimals: int | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if decimals is None:
        return f"{value:.7g}"
    if abs(value) >= 1e6 or (value != 0 and abs(value) < 1e-4 and decimals > 8):
        return f"{value:.{max(decimals - 4, 3)}e}"
    return f"{value:.{decimals}f}"


def claim_cells(c: ClaimResult) -> dict:
    """Display strings of a claim row."""
    rel = {"approx": "≈", "le": "≤", "ge": "≥"}[c.claim.relation]
    if c.measured is None:
        return {"predicted": f"{c.claim.predicted}" if c.claim.predicted is not None else c.claim.predict,
                "measured": f"error: {c.error}", "tolerance": f"{c.claim.tolerance:g}", "relation": rel}
    # Resolve the tolerance applied (one digit finer); uncertainties are shown in 2 significant digits.
    d = _decimals(c.allowed)
    d = None if d is None else min(d + 1, 12)
    meas = fmt(c.measured.value, d)
    if c.measured.uncertainty > 0:
        meas += f" ± {c.measured.uncertainty:.2g}"
    pred = fmt(c.predicted.value, d)
    if c.predicted.uncertainty > 0:
        pred += f" ± {c.predicted.uncertainty:.2g}"
    if c.claim.predict:
        pred += f" ({c.claim.predict})"
    tol = f"{c.allowed:.2g}"
    if c.claim.sigmas:
        tol += f" (= {c.claim.tolerance:g} + {c.claim.sigmas:g}σ)"
    diff = c.measured.value - c.predicted.value
    return {"predicted": pred, "measured": meas, "tolerance": tol, "relation": rel,
            "difference": f"{diff:+.2e}"}
