"""The training record as a picture: the loss curve of ``samconvex train-sam``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ...edge.io.atomic import atomic_write
from ...errors import InputError


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a training log (``OUT.log.csv``: iteration, loss, local, global,
    seconds) as float arrays."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training log {path} does not exist; train with --out first.")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(f"training log {path} has no rows.")
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def wall_seconds(seconds: np.ndarray) -> float:
    """Total training wall time from a log's ``seconds`` column, which restarts from zero
    in each resumed process: the sum of every segment's last value."""
    restarts = np.flatnonzero(np.diff(seconds) < 0)
    return float(seconds[restarts].sum() + seconds[-1]) if len(seconds) else 0.0


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_loss(log: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a PNG of the total, local and global InfoNCE losses against the iteration
    (thin: every step; thick: the running mean over 50 steps), hours on the top axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = read_log(log)
    it = columns["iteration"]
    fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, colour in (("loss", "black"), ("local", "tab:blue"), ("global", "tab:orange")):
        ax.plot(it, columns[key], color=colour, alpha=0.2, linewidth=0.6)
        smooth = _running_mean(columns[key], 50)
        ax.plot(it[len(it) - len(smooth) :], smooth, color=colour, label=key, linewidth=1.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("InfoNCE loss")
    ax.legend()
    ax.grid(alpha=0.3)
    hours = wall_seconds(columns["seconds"]) / 3600.0
    ax.set_title(f"{Path(log).name}: {int(it[-1])} iterations, {hours:.2f} h of wall time")

    def write_to(temp: Path) -> None:
        fig.savefig(temp, format="png")

    return atomic_write(Path(out), write_to, overwrite=overwrite)


__all__ = ["plot_loss", "read_log", "wall_seconds"]
