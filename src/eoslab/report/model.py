"""What a report holds: one :class:`Section` per experiment, in the papers' order (:mod:`.order`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eoslab.experiments.claims import ClaimResult
from eoslab.experiments.runner import ExperimentResults


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
