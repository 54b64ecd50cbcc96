"""The order of the report: the papers' order, then eoslab's own checks.

Sections are grouped into :data:`PARTS` by the experiment's kind (its ``<model>.<what>`` name),
then ordered within a part by :data:`WITHIN` and finally by experiment name, so the report reads
like the papers: Agarwala, Pedregosa & Pennington (ICML 2023) Theorem 1 (the 2-D model), Theorem 2
(random second-order models), their connection with deep networks; then the companion papers
(Liu et al. 2025, the minimalist two-layer net; Crăciun & Ghoshdastidar 2024, deep linear nets);
then the extensions (central flows, the edges of other optimizers); then what eoslab checks about
itself (the eigenvalue tracker)."""

from __future__ import annotations

#: (part title, kind prefixes), in report order. A kind matching no prefix goes to the last part.
PARTS = (
    ("Theorem 1: the 2-D model", ("quadratic2d.",)),
    ("Theorem 2: random second-order models", ("second_order.",)),
    ("Networks", ("networks.",)),
    ("Companion papers: the two-layer net and deep linear nets", ("two_layer.", "linear_net.")),
    ("Beyond the papers: central flows and other optimizers", ("central_flow.", "optim.")),
    ("eoslab's own checks", ()),
)

#: Order of kinds inside a part (the theorem before its illustrations); unlisted kinds follow.
WITHIN = ("quadratic2d.eos_limit", "quadratic2d.phase", "second_order.theorem2", "second_order.highdim_eos",
          "networks.eos", "two_layer.phases", "linear_net.threshold")


def part_of(kind: str) -> int:
    """Index in :data:`PARTS` of the part an experiment of ``kind`` belongs to."""
    for i, (_, prefixes) in enumerate(PARTS):
        if any(kind.startswith(p) for p in prefixes):
            return i
    return len(PARTS) - 1


def ordered(items, kind=lambda x: x.kind, name=lambda x: x.name) -> list:
    """``items`` (experiments, results, sections) sorted in report order."""
    rank = {k: i for i, k in enumerate(WITHIN)}
    return sorted(items, key=lambda x: (part_of(kind(x)), rank.get(kind(x), len(rank)), name(x)))
