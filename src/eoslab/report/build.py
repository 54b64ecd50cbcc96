"""Assemble a report: evaluate claims, draw each kind's figures, write both documents."""

from __future__ import annotations

import time
import traceback
import warnings
from pathlib import Path

from eoslab.experiments.claims import evaluate
from eoslab.experiments.runner import ExperimentResults
from eoslab.plots.style import save
from eoslab.report.markdown import render_md
from eoslab.report.model import Report, Section
from eoslab.report.order import ordered
from eoslab.report.page import render_html


def build(results: list[ExperimentResults], out: str | Path, mode: str, started: float | None = None,
          figures: bool = True) -> Report:
    """Evaluate claims, draw figures into ``out/figures`` and write ``out/report.md`` and
    ``out/report.html``. ``started``: the ``time.perf_counter()`` at which the reproduction
    began (the header then gives its wall time, up to the report). Returns the :class:`Report`
    (``report.passed``)."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections = []
    for res in ordered(results, kind=lambda r: r.experiment.kind, name=lambda r: r.experiment.name):
        errors, figs = [], []
        if figures and res.kind.figures is not None:
            try:
                for name, fig, caption in res.kind.figures(res):
                    paths = save(fig, out / "figures" / name)
                    figs.append((name, caption, next(p for p in paths if p.suffix == ".png")))
            except Exception as e:  # noqa: BLE001 - a broken figure is reported, claims still are
                msg = "".join(traceback.format_exception_only(type(e), e)).strip()
                errors.append(f"figure failed: {msg}")
                warnings.warn(f"{res.experiment.name}: figure failed: {msg}", stacklevel=2)
        sections.append(Section(res, evaluate(res), figs, errors))
    report = Report(sections, mode, out, None if started is None else time.perf_counter() - started)
    report.md_path.write_text(render_md(report), encoding="utf-8")
    report.html_path.write_text(render_html(report), encoding="utf-8")
    return report
