"""``report.md``: GitHub-flavoured markdown, figures linked from ``figures/``."""

from __future__ import annotations

from pathlib import Path

from eoslab.report.cells import claim_cells
from eoslab.report.model import Report
from eoslab.report.order import PARTS, part_of
from eoslab.report.text import anchor, header_rows, md_escape, sentence


def render_md(report: Report) -> str:
    L = ["# eoslab reproduction report", ""]
    L += [f"- **{k}**: {v}" for k, v in header_rows(report)]
    L += ["", "| experiment | runs | computation (s) | claims |", "| --- | --- | --- | --- |"]
    for s in report.sections:
        k = sum(c.passed for c in s.claims)
        L.append(f"| [{s.results.experiment.name}](#{anchor(s.results.experiment.title)}) | {len(s.results.runs)} | "
                 f"{s.wall_s:.1f} | {k}/{len(s.claims)} pass |")
    L += ["", "## Claims", "",
          "Each claim's source (paper, section or equation, or a page of these docs) is given with its experiment "
          "below.", "",
          "| status | claim | predicted | measured | tolerance |",
          "| --- | --- | --- | --- | --- |"]
    for c in report.claims:
        cell = claim_cells(c)
        status = "**PASS**" if c.passed else "**FAIL**"
        L.append(f"| {status} | `{c.claim.id}`: {md_escape(c.claim.statement)} | "
                 f"{cell['predicted']} | {cell['relation']} {md_escape(cell['measured'])} | {cell['tolerance']} |")
    L += ["", "Rule: `approx` passes when |measured − predicted| ≤ tolerance; `le` when measured ≤ predicted + "
          "tolerance; `ge` when measured ≥ predicted − tolerance. The tolerance column is what was applied "
          "(a fixed part plus, where the config says so, multiples σ of the combined standard uncertainty). "
          "Measured values are shown ± one standard uncertainty.", ""]
    part = None
    for s in report.sections:
        e = s.results.experiment
        if part_of(e.kind) != part:
            part = part_of(e.kind)
            L += [f"## {PARTS[part][0]}", ""]
        L += [f"### {e.title}", "", f"`{e.name}` (kind `{e.kind}`, config `{e.path.name}`) — source: {e.source}", ""]
        if e.description:
            L += [" ".join(e.description.split()), ""]
        L.append(f"{len(s.results.runs)} runs, {s.wall_s:.1f} s of computation.")
        L.append("")
        for c in s.claims:
            cell = claim_cells(c)
            L.append(f"- **{c.status}** `{c.claim.id}`: {c.claim.statement}. Predicted {cell['predicted']}, "
                     f"measured {cell['measured']}, tolerance {cell['tolerance']}. *Source:* {sentence(c.claim.source)} "
                     f"*Tolerance:* {sentence(c.claim.why)}"
                     + (f" *Note:* {sentence(c.measured.note)}" if c.measured is not None and c.measured.note else ""))
        L.append("")
        for err in s.errors:
            L += [f"> **warning**: {err}", ""]
        for name, caption, png in s.figures:
            rel = png.relative_to(report.out).as_posix()
            L += [f"![{name}]({rel})", "", f"*{caption}* ([SVG]({Path(rel).with_suffix('.svg').as_posix()}))", ""]
    return "\n".join(L) + "\n"
