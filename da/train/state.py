"""What a run carries from epoch to epoch: a typed state, saved in every checkpoint as plain types."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    epoch: int = 0  # epochs finished
    history: list[dict] = field(default_factory=list)  # per-epoch summaries: the record's "epochs"
    metrics: list[dict] = field(default_factory=list)  # per-epoch full metrics {"source_val", "target_test"}
    selected_epoch: int | None = None  # 1-based, under the config's selection rule
    oracle_epoch: int | None = None  # 1-based best target-test epoch: uses target labels, never selects
    bad_epochs: int = 0  # epochs since the selected one (early stopping)
    stopped_early: bool = False
    images: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0  # summed over resumed segments
    resumed: int = 0
    started_at: float = field(default_factory=time.time)
    git_commit: str = "unknown"
    # stage 2: the start model's predicted class per target-train image (da.selection.drift's reference);
    # None in stage 1 and in checkpoints written before it was kept
    reference_predictions: list[int] | None = None
    # the version of each validator whose scores the history holds (da.selection.base); None for a validator
    # whose version changed across a resume (its scores mix two estimators); None: set at the first start
    validator_versions: dict[str, int | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        return cls(**data)

    def note_validator_versions(self, current: dict[str, int]) -> None:
        """Keep the versions of the validators scoring this run.  At the first start, ``current``; on a
        resume with other code, a validator whose version changed gets None (its history mixes two
        estimators, which tables refuse) and one new since the start its own version (its scores start
        later, as for any validator a record predates).  A checkpoint made before versions were kept
        had version 1 of every validator."""
        if self.validator_versions is None:
            self.validator_versions = dict(current) if self.epoch == 0 else {name: 1 for name in current}
        for name, version in current.items():
            before = self.validator_versions.setdefault(name, version)
            if before is not None and before != version:
                warnings.warn(f"validator {name!r} changed from version {before} to {version} since this run "
                              f"started: its scores mix both, and tables will refuse them (rerun the run afresh)")
                self.validator_versions[name] = None

    def selected(self) -> dict:
        """Full metrics of the selected epoch."""
        return self.metrics[self.selected_epoch - 1]

    def oracle(self) -> dict | None:
        if self.oracle_epoch is None:
            return None
        return {"epoch": self.oracle_epoch, "target_test": self.metrics[self.oracle_epoch - 1]["target_test"]}
