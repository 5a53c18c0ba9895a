"""``OUT/summary.csv`` and ``OUT/summary.json``: one row per pair of a batch.

Columns (:data:`SUMMARY_COLUMNS`): status ``done`` / ``skipped`` / ``failed``, attempts (every
attempt counted, including one lost with its worker) and why a pair was retried, seconds,
worker, peak RSS, the pre-alignment used and its fallback, Jacobian statistics of the
deformable part, mean Dice (with both label maps) and TRE (with landmarks), as the scorer
(``apps.evaluate``) reports them in the pair's ``report.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...edge.io import write_json, write_text

#: Columns of ``summary.csv`` (``summary.json`` has the same keys per pair).
SUMMARY_COLUMNS = (
    "name",
    "status",
    "attempts",
    "retried_because",
    "seconds",
    "registration_seconds",
    "worker",
    "peak_rss_mb",
    "worker_peak_rss_mb",
    "prealignment",
    "prealignment_fallback",
    "prealignment_seconds",
    "jacobian_min",
    "jacobian_percent_nonpositive",
    "sdlogj",
    "dice_mean_before_identity",
    "dice_mean_before_initial",
    "dice_mean_after",
    "tre_mean_before_identity_mm",
    "tre_mean_before_initial_mm",
    "tre_mean_after_mm",
    "tre_max_after_mm",
    "output",
    "error",
    "error_file",
    "note",
    "fixed",
    "moving",
)


def folder_stats(folder: Path) -> dict[str, Any]:
    """:func:`report_stats` of a finished pair folder ({} when its report is unreadable)."""
    from ..outputs import OUTPUT_NAMES

    try:
        report = json.loads((folder / OUTPUT_NAMES["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report_stats(report) if isinstance(report, dict) else {}


def report_stats(report: Mapping[str, Any]) -> dict[str, Any]:
    """Summary columns from a pair's ``report.json`` (the scorer's numbers, timings, the
    pre-alignment record)."""
    evaluation = report.get("evaluation") or {}
    jac = evaluation.get("jacobian_deformable") or evaluation.get("jacobian") or {}
    labels = (evaluation.get("labels") or {}).get("mean") or {}
    landmarks = evaluation.get("landmarks") or {}
    pre = report.get("prealignment") or {}
    timings = report.get("timings_s") or {}
    stages = timings.get("registration_stages") or {}

    def tre(state: str, stat: str = "mean") -> Any:
        return (landmarks.get(f"tre_mm_{state}") or {}).get(stat)

    return {
        "registration_seconds": stages.get("total", timings.get("registration")),
        "prealignment": pre.get("method"),
        "prealignment_fallback": pre.get("fallback"),
        "prealignment_seconds": pre.get("seconds"),
        "jacobian_min": jac.get("min"),
        "jacobian_percent_nonpositive": jac.get("percent_nonpositive"),
        "sdlogj": jac.get("sdlogj"),
        "dice_mean_before_identity": labels.get("dice_before_identity"),
        "dice_mean_before_initial": labels.get("dice_before_initial"),
        "dice_mean_after": labels.get("dice_after"),
        "tre_mean_before_identity_mm": tre("before_identity"),
        "tre_mean_before_initial_mm": tre("before_initial"),
        "tre_mean_after_mm": tre("after"),
        "tre_max_after_mm": tre("after", "max"),
    }


@dataclass
class BatchSummary:
    """The outcome of :func:`register_many`.

    Attributes:
        rows: one dict per pair in manifest order, keys :data:`SUMMARY_COLUMNS`.
        output_dir: ``OUT``.
        seconds: wall time of the call, including starting a local cluster.
        workers: number of Dask workers when the pairs were submitted (0 if nothing ran).
        dashboard: the Dask dashboard URL, when there was one.
    """

    rows: list[dict[str, Any]]
    output_dir: Path
    seconds: float = 0.0
    workers: int = 0
    dashboard: str | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def counts(self) -> dict[str, int]:
        """Pairs per status (``done``, ``skipped``, ``failed``, and ``pending`` if cut short)."""
        counts = {"done": 0, "skipped": 0, "failed": 0}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        """True when every pair is done or skipped."""
        return all(row["status"] in ("done", "skipped") for row in self.rows)

    @property
    def pairs_per_minute(self) -> float | None:
        """Pairs registered in this call per minute of wall time (None if none ran)."""
        done = self.counts["done"]
        return 60.0 * done / self.seconds if done and self.seconds > 0 else None

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "summary.csv"

    @property
    def json_path(self) -> Path:
        return self.output_dir / "summary.json"

    def __getitem__(self, name: str) -> dict[str, Any]:
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "started": self.started,
            "seconds": self.seconds,
            "workers": self.workers,
            "dashboard": self.dashboard,
            "counts": self.counts,
            "pairs_per_minute": self.pairs_per_minute,
            "pairs": [_clean_row(r) for r in self.rows],
        }

    def write(self) -> None:
        """Write ``summary.csv`` and ``summary.json`` atomically (temp file + rename)."""
        write_json(self.json_path, self.to_dict(), overwrite=True)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(v) for k, v in _clean_row(row).items()})
        write_text(self.csv_path, buffer.getvalue(), overwrite=True)


def _clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key in SUMMARY_COLUMNS:
        value = row.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


__all__ = ["SUMMARY_COLUMNS", "BatchSummary", "folder_stats", "report_stats"]
