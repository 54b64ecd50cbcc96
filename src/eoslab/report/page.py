"""``report.html``: one self-contained page (styles inline, figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html

from eoslab.report.cells import claim_cells
from eoslab.report.model import Report
from eoslab.report.order import PARTS, part_of
from eoslab.report.text import header_rows, sentence


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;width:100%;font-size:0.86em;margin:1em 0}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f5f5f5} td.claim,th.claim{width:55%} td.num{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:nowrap}
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
    H += [f"<tr><th>{e_(k)}</th><td>{e_(v)}</td></tr>" for k, v in header_rows(report)]
    H += ["</table>", "<table><tr><th>experiment</th><th>runs</th><th>computation (s)</th><th>claims</th></tr>"]
    for i, s in enumerate(report.sections):
        k = sum(c.passed for c in s.claims)
        H.append(f"<tr><td><a href='#exp{i}'>{e_(s.results.experiment.name)}</a></td><td>{len(s.results.runs)}</td>"
                 f"<td>{s.wall_s:.1f}</td><td>{k}/{len(s.claims)} pass</td></tr>")
    H += ["</table>", "<h2>Claims</h2>", "<p><small>Each claim's source is given with its experiment below.</small></p>",
          "<table><tr><th>status</th><th class='claim'>claim</th>"
          "<th>predicted</th><th>measured</th><th>tolerance</th></tr>"]
    for c in report.claims:
        cell = claim_cells(c)
        H.append(f"<tr><td class='{c.status}'>{c.status}</td><td class='claim' title='{e_(c.claim.id)}'>"
                 f"{e_(c.claim.statement)}</td><td class='num'>{e_(cell['predicted'])}"
                 f"</td><td class='num'>{e_(cell['relation'])} {e_(cell['measured'])}</td>"
                 f"<td class='num' title='{e_(c.claim.why)}'>{e_(cell['tolerance'])}</td></tr>")
    H.append("</table><p><small>approx: |measured − predicted| ≤ tolerance; le: measured ≤ predicted + tolerance; "
             "ge: measured ≥ predicted − tolerance. Measured values ± one standard uncertainty. Hover a "
             "tolerance for its justification.</small></p>")
    part = None
    for i, s in enumerate(report.sections):
        e = s.results.experiment
        if part_of(e.kind) != part:
            part = part_of(e.kind)
            H.append(f"<h2>{e_(PARTS[part][0])}</h2>")
        H += [f"<h3 id='exp{i}'>{e_(e.title)}</h3>", f"<p><code>{e_(e.name)}</code> (kind <code>{e_(e.kind)}</code>, config "
              f"<code>{e_(e.path.name)}</code>) — source: {e_(e.source)}</p>"]
        if e.description:
            H.append(f"<p>{e_(' '.join(e.description.split()))}</p>")
        H.append(f"<p><small>{len(s.results.runs)} runs, {s.wall_s:.1f} s of computation.</small></p><ul>")
        for c in s.claims:
            cell = claim_cells(c)
            note = f" <i>Note:</i> {e_(sentence(c.measured.note))}" if c.measured is not None and c.measured.note else ""
            H.append(f"<li><b class='{c.status}'>&nbsp;{c.status}&nbsp;</b> <code>{e_(c.claim.id)}</code>: "
                     f"{e_(c.claim.statement)}. Predicted {e_(cell['predicted'])}, measured {e_(cell['measured'])}, "
                     f"tolerance {e_(cell['tolerance'])}. <i>Source:</i> {e_(sentence(c.claim.source))} "
                     f"<i>Tolerance:</i> {e_(sentence(c.claim.why))}{note}</li>")
        H.append("</ul>")
        for err in s.errors:
            H.append(f"<p class='warn'>warning: {e_(err)}</p>")
        for name, caption, png in s.figures:
            data = base64.b64encode(png.read_bytes()).decode()
            H.append(f"<figure><img alt='{e_(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e_(caption)}</figcaption></figure>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"
