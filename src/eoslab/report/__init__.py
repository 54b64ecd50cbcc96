"""The reproduction report: ``report.md`` and a self-contained ``report.html`` (figures embedded
as base64 PNG), plus ``figures/*.png|svg``.

:func:`build` evaluates every claim of the given experiment results, draws each kind's figures
and writes both documents. It never runs dynamics: it reads the results store only.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import math
import platform
import sys
import time
import traceback
from pathlib import Path

from eoslab.experiments.claims import ClaimResult, evaluate
from eoslab.experiments.runner import ExperimentResults
from eoslab.plots.style import save


@dataclasses.dataclass
class Section:
    results: ExperimentResults
    claims: list[ClaimResult]
    figures: list[tuple[str, str, Path]]   # (name, caption, png path)
    errors: list[str]

    @property
    def wall_s(self) -> float:
        return sum(float(r.meta.get("wall_s") or 0.0) for r in self.results.runs)


@dataclasses.dataclass
class Report:
    sections: list[Section]
    mode: str
    out: Path
    elapsed_s: float | None

    @property
    def claims(self) -> list[ClaimResult]:
        return [c for s in self.sections for c in s.claims]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.claims)

    @property
    def md_path(self) -> Path:
        return self.out / "report.md"

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"


# ---- numbers ---------------------------------------------------------------------------------
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


# ---- building ----------------------------------------------------------------------------------
def build(results: list[ExperimentResults], out: str | Path, mode: str, started: float | None = None,
          figures: bool = True) -> Report:
    """Evaluate claims, draw figures into ``out/figures`` and write ``out/report.md`` and
    ``out/report.html``. ``started``: the ``time.perf_counter()`` at which the reproduction
    began (the header then gives its wall time, up to the report). Returns the :class:`Report`
    (``report.passed``)."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections = []
    for res in results:
        errors, figs = [], []
        if figures and res.kind.figures is not None:
            try:
                for name, fig, caption in res.kind.figures(res):
                    paths = save(fig, out / "figures" / name)
                    figs.append((name, caption, next(p for p in paths if p.suffix == ".png")))
            except Exception as e:  # noqa: BLE001 - a broken figure is reported, claims still are
                msg = "".join(traceback.format_exception_only(type(e), e)).strip()
                errors.append(f"figure failed: {msg}")
                print(f"warning: {res.experiment.name}: figure failed: {msg}", file=sys.stderr)
        sections.append(Section(res, evaluate(res), figs, errors))
    report = Report(sections, mode, out, None if started is None else time.perf_counter() - started)
    report.md_path.write_text(render_md(report), encoding="utf-8")
    report.html_path.write_text(render_html(report), encoding="utf-8")
    return report


def _header(report: Report) -> list[tuple[str, str]]:
    import eoslab

    n = len(report.claims)
    k = sum(c.passed for c in report.claims)
    rows = [("result", f"{k}/{n} claims pass" + ("" if k == n else f" — {n - k} FAIL")),
            ("mode", f"--{report.mode}"),
            ("eoslab", eoslab.__version__),
            ("written", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("machine", f"{platform.node()} ({platform.machine()}, {platform.system()}), Python "
                        f"{platform.python_version()}")]
    runs = sum(len(s.results.runs) for s in report.sections)
    comp = sum(s.wall_s for s in report.sections)
    rows.append(("runs", f"{runs} runs in {len(report.sections)} experiments, {comp:.1f} s of computation stored"))
    if report.elapsed_s is not None:
        rows.append(("time", f"{report.elapsed_s:.1f} s wall, {time.process_time():.1f} s CPU for this reproduce "
                             "(computing the missing runs, checking claims, drawing figures)"))
    return rows


def _anchor(title: str) -> str:
    """GitHub-style heading anchor."""
    import re

    return re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def _sentence(s: str) -> str:
    s = " ".join(s.split())
    return s if s.endswith((".", "!", "?")) else s + "."


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_md(report: Report) -> str:
    L = ["# eoslab reproduction report", ""]
    L += [f"- **{k}**: {v}" for k, v in _header(report)]
    L += ["", "| experiment | runs | computation (s) | claims |", "| --- | --- | --- | --- |"]
    for s in report.sections:
        k = sum(c.passed for c in s.claims)
        L.append(f"| [{s.results.experiment.name}](#{_anchor(s.results.experiment.title)}) | {len(s.results.runs)} | "
                 f"{s.wall_s:.1f} | {k}/{len(s.claims)} pass |")
    L += ["", "## Claims", "",
          "| status | claim | source | predicted | measured | tolerance |",
          "| --- | --- | --- | --- | --- | --- |"]
    for c in report.claims:
        cell = claim_cells(c)
        status = "**PASS**" if c.passed else "**FAIL**"
        L.append(f"| {status} | `{c.claim.id}`: {_md_escape(c.claim.statement)} | {_md_escape(c.claim.source)} | "
                 f"{cell['predicted']} | {cell['relation']} {_md_escape(cell['measured'])} | {cell['tolerance']} |")
    L += ["", "Rule: `approx` passes when |measured − predicted| ≤ tolerance; `le` when measured ≤ predicted + "
          "tolerance; `ge` when measured ≥ predicted − tolerance. The tolerance column is what was applied "
          "(a fixed part plus, where the config says so, multiples σ of the combined standard uncertainty). "
          "Measured values are shown ± one standard uncertainty.", ""]
    for s in report.sections:
        e = s.results.experiment
        L += [f"## {e.title}", "", f"`{e.name}` (kind `{e.kind}`, config `{e.path.name}`) — source: {e.source}", ""]
        if e.description:
            L += [" ".join(e.description.split()), ""]
        L.append(f"{len(s.results.runs)} runs, {s.wall_s:.1f} s of computation.")
        L.append("")
        for c in s.claims:
            cell = claim_cells(c)
            L.append(f"- **{c.status}** `{c.claim.id}`: {c.claim.statement}. Predicted {cell['predicted']}, "
                     f"measured {cell['measured']}, tolerance {cell['tolerance']}. *Tolerance:* {_sentence(c.claim.why)}"
                     + (f" *Note:* {_sentence(c.measured.note)}" if c.measured is not None and c.measured.note else ""))
        L.append("")
        for err in s.errors:
            L += [f"> **warning**: {err}", ""]
        for name, caption, png in s.figures:
            rel = png.relative_to(report.out).as_posix()
            L += [f"![{name}]({rel})", "", f"*{caption}* ([SVG]({Path(rel).with_suffix('.svg').as_posix()}))", ""]
    return "\n".join(L) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;width:100%;font-size:0.86em;margin:1em 0}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f5f5f5} td.num{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:nowrap}
.PASS{color:#fff;background:#2e7d32;font-weight:bold;text-align:center}
.FAIL{color:#fff;background:#c62828;font-weight:bold;text-align:center}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:0.88em;color:#555}
.warn{background:#fff3e0;border-left:4px solid #ef6c00;padding:0.4em 0.8em}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
small{color:#666}
"""


def render_html(report: Report) -> str:
    e_ = html.escape
    H = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
         "<meta name='viewport' content='width=device-width, initial-scale=1'>",
         "<title>eoslab reproduction report</title>", f"<style>{_CSS}</style></head><body>",
         "<h1>eoslab reproduction report</h1>", "<table>"]
    H += [f"<tr><th>{e_(k)}</th><td>{e_(v)}</td></tr>" for k, v in _header(report)]
    H += ["</table>", "<table><tr><th>experiment</th><th>runs</th><th>computation (s)</th><th>claims</th></tr>"]
    for i, s in enumerate(report.sections):
        k = sum(c.passed for c in s.claims)
        H.append(f"<tr><td><a href='#exp{i}'>{e_(s.results.experiment.name)}</a></td><td>{len(s.results.runs)}</td>"
                 f"<td>{s.wall_s:.1f}</td><td>{k}/{len(s.claims)} pass</td></tr>")
    H += ["</table>", "<h2>Claims</h2>", "<table><tr><th>status</th><th>claim</th><th>source</th>"
          "<th>predicted</th><th>measured</th><th>tolerance</th></tr>"]
    for c in report.claims:
        cell = claim_cells(c)
        H.append(f"<tr><td class='{c.status}'>{c.status}</td><td><code>{e_(c.claim.id)}</code><br>"
                 f"{e_(c.claim.statement)}</td><td>{e_(c.claim.source)}</td><td class='num'>{e_(cell['predicted'])}"
                 f"</td><td class='num'>{e_(cell['relation'])} {e_(cell['measured'])}</td>"
                 f"<td class='num' title='{e_(c.claim.why)}'>{e_(cell['tolerance'])}</td></tr>")
    H.append("</table><p><small>approx: |measured − predicted| ≤ tolerance; le: measured ≤ predicted + tolerance; "
             "ge: measured ≥ predicted − tolerance. Measured values ± one standard uncertainty. Hover a "
             "tolerance for its justification.</small></p>")
    for i, s in enumerate(report.sections):
        e = s.results.experiment
        H += [f"<h2 id='exp{i}'>{e_(e.title)}</h2>", f"<p><code>{e_(e.name)}</code> (kind <code>{e_(e.kind)}</code>, config "
              f"<code>{e_(e.path.name)}</code>) — source: {e_(e.source)}</p>"]
        if e.description:
            H.append(f"<p>{e_(' '.join(e.description.split()))}</p>")
        H.append(f"<p><small>{len(s.results.runs)} runs, {s.wall_s:.1f} s of computation.</small></p><ul>")
        for c in s.claims:
            cell = claim_cells(c)
            note = f" <i>Note:</i> {e_(_sentence(c.measured.note))}" if c.measured is not None and c.measured.note else ""
            H.append(f"<li><b class='{c.status}'>&nbsp;{c.status}&nbsp;</b> <code>{e_(c.claim.id)}</code>: "
                     f"{e_(c.claim.statement)}. Predicted {e_(cell['predicted'])}, measured {e_(cell['measured'])}, "
                     f"tolerance {e_(cell['tolerance'])}. <i>Tolerance:</i> {e_(_sentence(c.claim.why))}{note}</li>")
        H.append("</ul>")
        for err in s.errors:
            H.append(f"<p class='warn'>warning: {e_(err)}</p>")
        for name, caption, png in s.figures:
            data = base64.b64encode(png.read_bytes()).decode()
            H.append(f"<figure><img alt='{e_(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e_(caption)}</figcaption></figure>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"
