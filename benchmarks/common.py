"""Pieces shared by the benchmark scripts: memory sampling, machine description, scoring.

Frames and units used throughout ``benchmarks/``:

* Images are ITK images; their numpy arrays are (z, y, x) (``itk.array_view_from_image``).
* A deformable field ``u`` is a float32 array (Z, Y, X, 3) on the fixed image grid holding
  the physical (x, y, z) displacement in LPS millimetres.
* With the shared affine pre-alignment ``A`` (an ITK transform, fixed -> moving, or None for
  the identity) the full registration maps a fixed point ``x`` to the moving point
  ``T(x) = A(x + u(x))`` (LPS mm), ITK's convention: ``warped(x) = moving(T(x))``.
* Point sets are (N, 3) arrays of LPS (x, y, z) mm.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_MANIFEST = DEFAULT_DATA / "MANIFEST.json"

logger = logging.getLogger("benchmark")


# ------------------------------------------------------------------------------- memory


def _descendant_pids(root: int) -> list[int]:
    """Process ids of every descendant of ``root`` (read from /proc, Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                # the command name is in parentheses and may contain spaces
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _rss_of(pid: int | str) -> int:
    """Resident set size of one process in bytes (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class PeakMemory:
    """Samples this process's resident set size every few ms; ``peak`` of one section (bytes).

    Use as a context manager around the code to measure: ``baseline`` is the resident
    memory on entry, ``peak`` the largest sample (including one on exit). With
    ``include_children=True`` each sample is the sum over this process and all its
    descendants (for methods that run an external executable); that scan of /proc is
    slower, so the sampling interval is then at least 20 ms.
    """

    def __init__(self, interval: float = 0.005, include_children: bool = False) -> None:
        self.include_children = include_children
        self.interval = max(interval, 0.02) if include_children else interval
        self.peak = 0
        self.baseline = 0
        self.running = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_bytes() -> int:
        """Resident set size of this process in bytes."""
        return _rss_of("self")

    def sample(self) -> int:
        """One sample: this process's RSS, plus its descendants' with ``include_children``."""
        total = self.rss_bytes()
        if self.include_children:
            total += sum(_rss_of(pid) for pid in _descendant_pids(os.getpid()))
        return total

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self.sample()
        self.running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.sample())


# ------------------------------------------------------------------------------- machine


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, usable cores, RAM and package versions of this machine (JSON-ready)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    ram_gb = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    packages = {
        name: _version(dist)
        for name, dist in (
            ("itk-samconvex", "itk-samconvex"),
            ("torch", "torch"),
            ("itk", "itk"),
            ("itk-elastix", "itk-elastix"),
            ("convexadam", "convexAdam"),
            ("antspyx", "antspyx"),
            ("niftyreg", "niftyreg"),
            ("numpy", "numpy"),
            ("scipy", "scipy"),
        )
    }
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": ram_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": packages,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One human-readable line describing :func:`machine_info`'s machine."""
    pkgs = info["packages"]
    versions = ", ".join(f"{k} {v}" for k, v in pkgs.items() if v and k not in ("numpy", "scipy"))
    return (
        f"{info['cpu']}, {info['usable_cores']} usable cores ({info['logical_cores']} "
        f"logical), {info['ram_gb']} GB RAM, {info['os']}, Python {info['python']}; "
        f"{versions}"
    )


# ------------------------------------------------------------------------------- scoring


@dataclass
class Reference:
    """Everything needed to score a deformable field on one case, identically for all methods.

    Attributes:
        fixed: the fixed ITK image (defines the grid of the fields).
        affine: shared pre-alignment ``A`` (ITK transform, fixed -> moving) or None.
        fixed_labels, moving_labels: ITK label maps on their images' grids, or None.
        labels: label ids to score (present in both label maps).
        fixed_points, moving_points: (N, 3) corresponding landmarks, LPS mm, or None.
        truth: (Z, Y, X, 3) true total displacement ``T(x) - x`` (LPS mm) on the fixed grid,
            or None.
        body_mask: (Z, Y, X) bool, where the end-point error is averaged; None = everywhere.
    """

    fixed: Any
    affine: Any = None
    fixed_labels: Any = None
    moving_labels: Any = None
    labels: list[int] = field(default_factory=list)
    fixed_points: np.ndarray | None = None
    moving_points: np.ndarray | None = None
    truth: np.ndarray | None = None
    body_mask: np.ndarray | None = None


def _transforms(reference: Reference, field_mm: np.ndarray) -> tuple[Any, Any]:
    """(``A o (id + u)``, ``id + u``) as ITK transforms, for the package's scorer."""
    from itk_samconvex.edge.itk_classes import composite_transform
    from itk_samconvex.edge.space import Grid
    from itk_samconvex.edge.transforms import displacement_transform

    deformable = displacement_transform(field_mm, Grid.of(reference.fixed))
    if reference.affine is None:
        return deformable, deformable
    total = composite_transform().New()
    total.AddTransform(reference.affine)
    total.AddTransform(deformable)
    return total, deformable


def warp_labels(reference: Reference, field_mm: np.ndarray) -> np.ndarray:
    """Moving labels warped once through ``A o (id + u)`` (nearest neighbour), (Z, Y, X)."""
    from itk_samconvex.edge.space import array_view
    from itk_samconvex.edge.transforms import warp_image

    total, _ = _transforms(reference, field_mm)
    warped = warp_image(
        reference.moving_labels, total, reference.fixed_labels, nearest=True, default_value=0
    )
    return np.asarray(array_view(warped)).copy()


def score(reference: Reference, field_mm: np.ndarray) -> dict[str, Any]:
    """Every metric of one deformable field on one case (JSON-ready; NaN where undefined).

    Labels, landmarks and the Jacobian are scored by the package's one scorer
    (``itk_samconvex.apps.evaluate.evaluate``) on ``A o (id + u)``; the benchmark adds only
    what the package cannot know, the end-point error against a known truth.

    * ``dice`` / ``hd95`` per label (HD95 in mm) and their NaN-ignoring means
      ``mean_dice`` / ``mean_hd95``.
    * ``tre_mean`` / ``tre_median`` / ``tre_p90`` (mm): ``|A(p + u(p)) - q|`` over landmark
      pairs (p fixed, q moving); ``tre_initial`` the same with the identity.
    * ``epe_mean`` (mm): mean ``|(A(x + u(x)) - x) - truth(x)|`` over the body mask.
    * ``sdlogj`` (plain std of log det, Learn2Reg's +3 offset not applied),
      ``percent_nonpositive``, ``det_min``: Jacobian of ``x -> x + u(x)`` (the deformable
      part) on the whole fixed grid (central differences, physical units).
    """
    from itk_samconvex.apps.evaluate import evaluate
    from itk_samconvex.edge.space import Grid, dense_field_of

    total, deformable = _transforms(reference, field_mm)
    labels = reference.fixed_labels is not None and reference.moving_labels is not None
    points = reference.fixed_points is not None and reference.moving_points is not None
    result = evaluate(
        reference.fixed,
        total,
        deformable_transform=deformable,
        fixed_labels=reference.fixed_labels if labels else None,
        moving_labels=reference.moving_labels if labels else None,
        label_ids=reference.labels if labels else None,
        fixed_points=reference.fixed_points if points else None,
        moving_points=reference.moving_points if points else None,
    )
    out: dict[str, Any] = {}
    if labels:
        out["dice"] = {str(k): float(v) for k, v in result.dice["after"].items()}
        out["hd95"] = {str(k): float(v) for k, v in result.hd95_mm["after"].items()}
        out["mean_dice"] = result.mean_dice("after")
        out["mean_hd95"] = result.mean_hd95_mm("after")
    if points:
        errors = result.tre_mm["after"]
        out["tre_mean"] = float(errors.mean())
        out["tre_median"] = float(np.median(errors))
        out["tre_p90"] = float(np.percentile(errors, 90))
        out["tre_initial"] = float(result.tre_mm["before_identity"].mean())
    if reference.truth is not None:
        grid = Grid.of(reference.fixed)
        total_field = (
            field_mm.astype(np.float64)
            if reference.affine is None
            else dense_field_of(total, grid, np.float64)
        )
        error = np.linalg.norm(total_field - reference.truth, axis=-1)
        mask = (
            reference.body_mask if reference.body_mask is not None else np.ones(error.shape, bool)
        )
        out["epe_mean"] = float(error[mask].mean())
        out["epe_initial"] = float(np.linalg.norm(reference.truth, axis=-1)[mask].mean())
    stats = result.jacobian_deformable
    out["sdlogj"] = stats["sdlogj"]
    out["percent_nonpositive"] = stats["percent_nonpositive"]
    out["det_min"] = stats["min"]
    return out


# ------------------------------------------------------------------------------- misc
