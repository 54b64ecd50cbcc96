"""Small text helpers of the report: anchors, sentences, escaping, the header rows."""

from __future__ import annotations

import datetime as _dt
import platform
import time

from eoslab.report.model import Report


def header_rows(report: Report) -> list[tuple[str, str]]:
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


def anchor(title: str) -> str:
    """GitHub-style heading anchor."""
    import re

    return re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def sentence(s: str) -> str:
    s = " ".join(s.split())
    return s if s.endswith((".", "!", "?")) else s + "."


def md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")
