"""The reproduction report: ``report.md`` and a self-contained ``report.html`` (figures embedded
as base64 PNG), plus ``figures/*.png|svg``.

:func:`build` evaluates every claim of the given experiment results, draws each kind's figures
and writes both documents, sections in the papers' order (:mod:`eoslab.report.order`: Theorem 1,
Theorem 2, networks, the companion papers, then eoslab's own checks). It never runs dynamics: it
reads the results store only. Modules: ``model`` (Report, Section), ``order``, ``cells`` (number
and claim formatting), ``text``, ``markdown``, ``page`` (HTML), ``build``.
"""

from eoslab.report.build import build
from eoslab.report.cells import claim_cells, fmt
from eoslab.report.markdown import render_md
from eoslab.report.model import Report, Section
from eoslab.report.order import PARTS, ordered, part_of
from eoslab.report.page import render_html

__all__ = ["build", "claim_cells", "fmt", "render_md", "render_html", "Report", "Section", "PARTS", "ordered",
           "part_of"]
