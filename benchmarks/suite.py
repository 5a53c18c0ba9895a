"""Benchmark suite: every available method on every case of a manifest, in one run.

Methods (``benchmarks/adapters.py``): ours (``default`` and ``paper`` presets, each with and
without instance optimisation), ConvexAdam, elastix B-spline, ANTs SyN, NiftyReg f3d and
identity. A peer that is not installed is reported, not fatal.

Cases: every case of the manifest that has a moving image, plus a simulated inhale/exhale
pair with a known deformation built from the thoracic CT (``simulated_lung.py``).

Protocol:

1. Pre-alignment, shared by every method: identity for intra-patient pairs from one scanner
   frame (manifest kind ``lung``: two phases of one 4DCT; the simulated pair), otherwise one
   itk-elastix affine (``itk_samconvex.edge.elastix.elastix_affine``) per case, timed separately
   (not part of any method's time). If the affine fails, the case runs with the identity
   and the error is reported.
2. Each method runs all cases in its own fresh process, after one warm-up registration on a
   tiny phantom (imports and lazy loading stay out of the timing). The timed part is the
   registration call alone (``Adapter.run``); a thread samples the process's resident
   memory during it (plus its child processes' for methods that run executables). A case
   that raises is reported with its error; a process that dies or exceeds its per-case time
   limit (each adapter's ``timeout_s``, or ``--timeout`` for all) is killed with the
   executables it started and restarted for the remaining cases.
3. Every method's deformable field ``u`` (fixed grid, LPS mm) is scored the same way
   (``common.score``): labels warped once through ``A o (id + u)`` with nearest-neighbour
   interpolation, Dice and HD95 per label; TRE at landmarks and the end-point error against
   the truth in the body (simulated case); SDlogJ and % det <= 0 of ``x + u(x)``.

Outputs in ``--out`` (default ``results/suite``): ``results.json``, ``results.md`` (the
tables), ``dice_vs_runtime.png``, ``organ_dice.png`` and ``readme_section.md`` (the summary,
command and machine, ready for the top-level README). The final table is printed.

Usage::

    python benchmarks/suite.py [--out results/suite] [--cases all|KIND|ID ...]
        [--methods all|NAME ...] [--quick] [--no-simulated] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_module
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adapters import ALL_METHODS, HEADLINE, OURS, PEERS, PairInputs, make_adapter, prealign
from common import (
    DEFAULT_MANIFEST,
    REPO_ROOT,
    PeakMemory,
    Reference,
    machine_info,
    machine_line,
    score,
)

logger = logging.getLogger("benchmark.suite")

# kinds whose fixed and moving images share one scanner frame: identity pre-alignment
SAME_FRAME_KINDS = ("lung", "simulated")
# robustness cases: run and reported, but left out of the means (see ../shared/data/README.md)
ROBUSTNESS_CASES = ("abdomen_ts_example_vs_ts_dicom",)
WARM_UP_TIMEOUT_S = 300.0  # time limit of a method process's start-up and warm-up


# ------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One prepared case: file paths for the method processes, a Reference for scoring."""

    id: str
    kind: str
    fixed_path: Path
    moving_path: Path
    prealigned_path: Path
    affine_path: Path | None
    reference: Reference
    label_names: dict[int, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def job(self) -> dict[str, Any]:
        """What a method process needs (plain strings, picklable)."""
        return {
            "id": self.id,
            "fixed": str(self.fixed_path),
            "moving": str(self.moving_path),
            "prealigned": str(self.prealigned_path),
            "affine": str(self.affine_path) if self.affine_path else None,
        }


def prealignment_rule(kind: str) -> str:
    """``"identity"`` for same-frame pairs (kinds in ``SAME_FRAME_KINDS``), else elastix."""
    return "identity" if kind in SAME_FRAME_KINDS else "elastix-affine"


def _label_ids(fixed_labels, moving_labels) -> list[int]:
    import itk

    fixed_ids = set(np.unique(itk.array_view_from_image(fixed_labels)).tolist())
    moving_ids = set(np.unique(itk.array_view_from_image(moving_labels)).tolist())
    return sorted(int(v) for v in fixed_ids & moving_ids if v != 0)


def _prealign_case(
    case_id: str, kind: str, fixed, moving, folder: Path, affine_iterations: int
) -> tuple[Any, Path | None, dict[str, Any]]:
    """(A or None, its .h5 path or None, info) for one case; the affine is timed here."""
    import itk

    from itk_samconvex.edge.elastix import elastix_affine

    rule = prealignment_rule(kind)
    info: dict[str, Any] = {"prealignment": rule, "affine_seconds": None, "affine_error": None}
    if rule == "identity":
        return None, None, info
    tick = time.perf_counter()
    try:
        affine = elastix_affine(fixed, moving, iterations=affine_iterations)
    except Exception as error:  # a failed affine is a result of the robustness case
        info["affine_error"] = f"{type(error).__name__}: {error}"
        info["prealignment"] = "identity (elastix affine failed)"
        logger.warning(
            "%s: elastix affine failed (%s); running with the identity",
            case_id,
            info["affine_error"],
        )
        return None, None, info
    info["affine_seconds"] = time.perf_counter() - tick
    path = folder / "affine.h5"
    itk.transformwrite([affine], str(path))
    affine = itk.transformread(str(path))[0]  # what the method processes will read
    return affine, path, info


def load_manifest_case(
    entry: dict[str, Any], root: Path, work: Path, affine_iterations: int
) -> Case:
    """Read one manifest case, pre-align it and write the pre-aligned moving image."""
    import itk

    folder = work / "cases" / entry["id"]
    folder.mkdir(parents=True, exist_ok=True)
    fixed_path, moving_path = root / entry["fixed"], root / entry["moving"]
    fixed = itk.imread(str(fixed_path), itk.F)
    moving = itk.imread(str(moving_path), itk.F)
    affine, affine_path, info = _prealign_case(
        entry["id"], entry["kind"], fixed, moving, folder, affine_iterations
    )
    prealigned_path = folder / "moving_prealigned.nii.gz"
    itk.imwrite(prealign(fixed, moving, affine), str(prealigned_path), compression=True)
    reference = Reference(fixed=fixed, affine=affine)
    names: dict[int, str] = {}
    if entry.get("fixed_labels") and entry.get("moving_labels"):
        reference.fixed_labels = itk.imread(str(root / entry["fixed_labels"]))
        reference.moving_labels = itk.imread(str(root / entry["moving_labels"]))
        reference.labels = _label_ids(reference.fixed_labels, reference.moving_labels)
        if entry.get("label_names"):
            table = json.loads((root / entry["label_names"]).read_text())
            names = {label: table.get(str(label), str(label)) for label in reference.labels}
    return Case(
        entry["id"],
        entry["kind"],
        fixed_path,
        moving_path,
        prealigned_path,
        affine_path,
        reference,
        names,
        info,
    )


def simulated_case(
    source: Path, seed: int, work: Path, diaphragm_mm: float = 20.0, reverse: bool = False
) -> Case:
    """Generate a simulated lung pair (``simulated_lung.py``) into the work folder.

    ``reverse``: fixed = the source (exhale-like), moving = the simulated inhale-like image.
    """
    import itk

    from simulated_lung import SimulationParameters, reversed_pair, simulate_lung_pair, write_pair

    direction = "exhale_to_inhale" if reverse else "inhale_to_exhale"
    case_id = f"simulated_lung_seed{seed}_{diaphragm_mm:g}mm_{direction}"
    folder = work / "cases" / case_id
    params = SimulationParameters(diaphragm_mm=diaphragm_mm)
    pair = simulate_lung_pair(itk.imread(str(source), itk.F), seed=seed, params=params)
    if reverse:
        pair = reversed_pair(pair)
    write_pair(pair, folder)
    prealigned_path = folder / "moving_prealigned.nii.gz"
    itk.imwrite(prealign(pair.fixed, pair.moving, None), str(prealigned_path), compression=True)
    reference = Reference(
        fixed=pair.fixed,
        affine=None,
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
        labels=[1],
        fixed_points=pair.fixed_points,
        moving_points=pair.moving_points,
        truth=pair.truth,
        body_mask=pair.body_mask,
    )
    info = {
        "prealignment": prealignment_rule("simulated"),
        "affine_seconds": None,
        "affine_error": None,
        "simulation": pair.info,
        "source": str(source),
    }
    return Case(
        case_id,
        "simulated",
        folder / "fixed.nii.gz",
        folder / "moving.nii.gz",
        prealigned_path,
        None,
        reference,
        {1: "lung"},
        info,
    )


# ------------------------------------------------------------------------------- children


def _child(
    method: str,
    quick: bool,
    threads: int | None,
    jobs: list[dict[str, Any]],
    fields: str,
    scratch: str,
    results,
) -> None:
    """Run one method on every job in this fresh process; one message per job."""
    # own process group: a timeout then also ends the executables this process started
    os.setpgid(0, 0)
    import itk

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    adapter = make_adapter(method, quick=quick, threads=threads)
    tick = time.perf_counter()
    try:
        adapter.warm_up()
    except Exception as error:
        results.put(
            {
                "kind": "warm-up",
                "status": "error",
                "error": f"warm-up failed: {type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        )
        return
    results.put({"kind": "warm-up", "status": "ok", "seconds": time.perf_counter() - tick})
    for job in jobs:
        folder = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=scratch))
        message: dict[str, Any] = {"kind": "case", "id": job["id"]}
        try:
            fixed = itk.imread(job["fixed"], itk.F)
            moving = itk.imread(job["moving"], itk.F)
            affine = itk.transformread(job["affine"])[0] if job["affine"] else None
            prealigned = itk.imread(job["prealigned"], itk.F)
            inputs = PairInputs(fixed, moving, affine, prealigned, folder)
            prepared = adapter.prepare(inputs)
            with PeakMemory(include_children=adapter.spawns_processes) as memory:
                start = time.perf_counter()
                native = adapter.run(prepared)
                seconds = time.perf_counter() - start
            start = time.perf_counter()
            array = np.asarray(adapter.to_field(native, inputs), dtype=np.float32)
            size = fixed.GetLargestPossibleRegion().GetSize()
            expected = (int(size[2]), int(size[1]), int(size[0]), 3)
            if array.shape != expected:
                raise RuntimeError(f"field shape {array.shape}, expected {expected}")
            if not np.isfinite(array).all():
                raise RuntimeError("the field holds NaN or infinite values")
            path = Path(fields) / f"{method}__{job['id']}.npy"
            np.save(path, array)
            message.update(
                status="ok",
                seconds=seconds,
                convert_seconds=time.perf_counter() - start,
                peak_rss_mb=memory.peak / 2**20,
                peak_increase_mb=(memory.peak - memory.baseline) / 2**20,
                field=str(path),
            )
        except Exception as error:
            message.update(
                status="error",
                error=f"{type(error).__name__}: {error}",
                traceback=traceback.format_exc(),
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.put(message)


def _receive(results, process, timeout: float) -> dict[str, Any] | None:
    """The next message, or None when the process died or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=1.0)
        except queue_module.Empty:
            if not process.is_alive():
                try:  # a message may have arrived just before it exited
                    return results.get(timeout=1.0)
                except queue_module.Empty:
                    return None
    return None


def run_method(
    method: str, cases: list[Case], quick: bool, threads: int | None, timeout: float, work: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run one method on all cases in fresh processes; returns (per case outcome, method info)."""
    context = mp.get_context("spawn")
    fields = work / "fields"
    scratch = work / "scratch"
    fields.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"warm_up_seconds": [], "restarts": 0}
    pending = list(cases)
    while pending:
        results = context.Queue()
        process = context.Process(
            target=_child,
            args=(
                method,
                quick,
                threads,
                [c.job() for c in pending],
                str(fields),
                str(scratch),
                results,
            ),
            daemon=True,
        )
        process.start()
        try:
            # imports under load can be slow: the warm-up gets at least WARM_UP_TIMEOUT_S
            warm = _receive(results, process, max(timeout, WARM_UP_TIMEOUT_S))
            if warm is None or warm["status"] != "ok":
                error = warm["error"] if warm else "process died or timed out during warm-up"
                logger.error("%s: %s", method, error)
                for case in pending:
                    outcomes[case.id] = {"status": "error", "error": error}
                pending = []
            else:
                info["warm_up_seconds"].append(warm["seconds"])
            while pending:
                case = pending[0]
                message = _receive(results, process, timeout)
                if message is None:
                    reason = (
                        f"process died (exit code {process.exitcode})"
                        if not process.is_alive()
                        else f"timed out after {timeout:.0f} s"
                    )
                    logger.error(
                        "%s on %s: %s; restarting for the remaining cases", method, case.id, reason
                    )
                    outcomes[case.id] = {"status": "error", "error": reason}
                    pending.pop(0)
                    info["restarts"] += 1
                    break
                outcomes[case.id] = message
                pending.pop(0)
                if message["status"] == "ok":
                    logger.info(
                        "%-18s %-36s %8.2f s  peak %6.0f MB (+%.0f)",
                        method,
                        case.id,
                        message["seconds"],
                        message["peak_rss_mb"],
                        message["peak_increase_mb"],
                    )
                else:
                    logger.warning("%-18s %-36s error: %s", method, case.id, message["error"])
                    logger.debug("%s", message.get("traceback", ""))
        finally:  # also on errors and Ctrl-C: no process of ours outlives the suite
            if process.is_alive():
                process.join(timeout=5 if pending else 30)
            _kill_group(process)
    return outcomes, info


def _kill_group(process) -> None:
    """End a method process and every process it started (its process group)."""
    if process.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.join()


# ------------------------------------------------------------------------------- scoring


def _clean(value: Any) -> Any:
    """JSON-ready: NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_outcome(case: Case, outcome: dict[str, Any]) -> dict[str, Any]:
    """Add the metrics of a successful outcome (and drop the field file)."""
    result = {k: v for k, v in outcome.items() if k not in ("kind", "id", "field", "traceback")}
    if outcome.get("status") != "ok":
        return result
    path = Path(outcome["field"])
    try:
        result.update(score(case.reference, np.load(path)))
    except Exception as error:
        result.update(status="error", error=f"scoring failed: {type(error).__name__}: {error}")
    finally:
        path.unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------------- report


def _get(results: dict, case: str, method: str, key: str) -> float | None:
    entry = results.get(case, {}).get(method, {})
    if entry.get("status") != "ok":
        return None
    value = entry.get(key)
    return (
        None
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else float(value)
    )


def one_line(text: Any, limit: int = 160) -> str:
    """An error message fit for a markdown table cell: one line, no pipes, at most ``limit``."""
    flat = " ".join(str(text).replace("|", "/").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def common_cases(report: dict[str, Any]) -> list[str]:
    """Aggregated cases (no robustness case) on which every method that worked returned a field.

    A method "worked" when it returned a field on at least one case; one that failed
    everywhere (e.g. its warm-up failed) is reported as such but does not empty the means.
    """
    cases = [case for case in report["cases"] if case not in ROBUSTNESS_CASES]
    worked = [
        m
        for m, info in report["methods"].items()
        if info["available"]
        and any(
            report["results"][case].get(m, {}).get("status") == "ok" for case in report["cases"]
        )
    ]
    return [
        case
        for case in cases
        if all(report["results"][case].get(m, {}).get("status") == "ok" for m in worked)
    ]


def best_peer(report: dict[str, Any], case: str, key: str, lower: bool) -> tuple[str, float] | None:
    """(peer, value) with the best ``key`` on ``case`` among the peers that ran."""
    values = [(m, _get(report["results"], case, m, key)) for m in PEERS if m in report["methods"]]
    values = [(m, v) for m, v in values if v is not None]
    if not values:
        return None
    return (min if lower else max)(values, key=lambda item: item[1])


def headline(report: dict[str, Any]) -> str | None:
    """Our variant compared with the peers: ``HEADLINE`` if it returned a field on some case,
    else the first of ours that did (None if none did)."""
    ran = [
        m
        for m in (HEADLINE, *OURS)
        if m in report["methods"]
        and any(
            report["results"][case].get(m, {}).get("status") == "ok" for case in report["cases"]
        )
    ]
    return ran[0] if ran else None


def _summary_lines(report: dict[str, Any], heading: str) -> list[str]:
    """Per-method means over the common cases (+ simulated-case TRE/EPE)."""
    methods = list(report["methods"])
    labels = {m: report["methods"][m]["label"] for m in methods}
    results = report["results"]
    cases = list(report["cases"])
    common = common_cases(report)
    sims = [c for c in cases if report["cases"][c]["kind"] == "simulated"]
    lines = [
        f"{heading} Summary (mean over the {len(common)} cases where every method that "
        "worked returned a field; robustness cases excluded)",
        "",
        "| method | cases ok / run | mean Dice | mean HD95 mm | TRE mm (sim) | EPE mm (sim) "
        "| mean SDlogJ | mean % det<=0 | mean s | total s | max peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        if not report["methods"][m]["available"]:
            lines.append(f"| {labels[m]} | not run | | | | | | | | | |")
            continue
        ok = sum(results[c].get(m, {}).get("status") == "ok" for c in cases)

        def mean(key: str, pool: list[str], method: str = m) -> float | None:
            return _mean([_get(results, c, method, key) for c in pool])

        times = [_get(results, c, m, "seconds") for c in cases]
        peaks = [_get(results, c, m, "peak_rss_mb") for c in cases]
        lines.append(
            f"| {labels[m]} | {ok} / {len(cases)} | {_fmt(mean('mean_dice', common))} | "
            f"{_fmt(mean('mean_hd95', common), 2)} | {_fmt(mean('tre_mean', sims), 2)} | "
            f"{_fmt(mean('epe_mean', sims), 2)} | {_fmt(mean('sdlogj', common))} | "
            f"{_fmt(mean('percent_nonpositive', common))} | {_fmt(mean('seconds', common), 2)} "
            f"| {_fmt(sum(t for t in times if t is not None), 1)} | "
            f"{_fmt(max((p for p in peaks if p is not None), default=None), 0)} |"
        )
    return lines


def _comparison_lines(report: dict[str, Any], heading: str) -> list[str]:
    """Our headline variant against each peer (overall) and against the best peer per case."""
    methods = list(report["methods"])
    labels = {m: report["methods"][m]["label"] for m in methods}
    results = report["results"]
    cases = list(report["cases"])
    common = common_cases(report)
    sims = [c for c in cases if report["cases"][c]["kind"] == "simulated"]
    ours = headline(report)
    if ours is None:
        return []
    peers = [m for m in PEERS if m in methods and report["methods"][m]["available"]]
    lines = [
        f"{heading} {labels[ours]} against each peer",
        "",
        "Per peer over the common cases: mean Dice difference (ours − peer), cases where "
        "ours has the higher Dice, geometric mean of the wall-time ratio (ours / peer; "
        "< 1 = ours faster), TRE difference on the simulated case (mm, < 0 = ours better).",
        "",
        "| peer | mean ΔDice | ours better | time ratio (geo. mean) | ΔTRE mm (sim) |",
        "|---|---|---|---|---|",
    ]
    for peer in peers:
        deltas, wins, ratios, tre = [], 0, [], []
        for c in common:
            a, b = _get(results, c, ours, "mean_dice"), _get(results, c, peer, "mean_dice")
            if a is not None and b is not None:
                deltas.append(a - b)
                wins += a > b
            ta, tb = _get(results, c, ours, "seconds"), _get(results, c, peer, "seconds")
            if ta and tb:
                ratios.append(math.log(ta / tb))
        for c in sims:
            a, b = _get(results, c, ours, "tre_mean"), _get(results, c, peer, "tre_mean")
            if a is not None and b is not None:
                tre.append(a - b)
        ratio = math.exp(np.mean(ratios)) if ratios else None
        lines.append(
            f"| {labels[peer]} | {_fmt(_mean(deltas))} | {wins} / {len(deltas)} | "
            f"{_fmt(ratio, 3)} | {_fmt(_mean(tre), 2)} |"
        )
    lines += [
        "",
        f"{heading}# Per case: {labels[ours]} against the best peer; wall-time ratios",
        "",
        "ΔDice = ours − best peer by Dice; ΔTRE = ours − best peer by TRE (mm, lower is "
        "better); ratio = ours time / peer time (< 1 = ours faster).",
        "",
        "| case | best peer (Dice) | ΔDice | best peer (TRE) | ΔTRE mm | "
        + " | ".join(f"ratio vs {labels[p]}" for p in peers)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(peers),
    ]
    for c in cases:
        mine = _get(results, c, ours, "mean_dice")
        bd = best_peer(report, c, "mean_dice", lower=False)
        bt = best_peer(report, c, "tre_mean", lower=True)
        mine_tre = _get(results, c, ours, "tre_mean")
        d_dice = None if bd is None or mine is None else mine - bd[1]
        d_tre = None if bt is None or mine_tre is None else mine_tre - bt[1]
        ratios_text = []
        for p in peers:
            ta, tb = _get(results, c, ours, "seconds"), _get(results, c, p, "seconds")
            ratios_text.append(_fmt(ta / tb, 3) if ta and tb else "—")
        lines.append(
            f"| {c} | {labels[bd[0]] + f' ({bd[1]:.3f})' if bd else '—'} | "
            f"{_fmt(d_dice)} | {labels[bt[0]] + f' ({bt[1]:.2f})' if bt else '—'} | "
            f"{_fmt(d_tre, 2)} | " + " | ".join(ratios_text) + " |"
        )
    return lines


def _full_table_lines(report: dict[str, Any], heading: str) -> list[str]:
    """Every case x method: metrics, time, memory, or the error."""
    methods = list(report["methods"])
    labels = {m: report["methods"][m]["label"] for m in methods}
    results = report["results"]
    cases = list(report["cases"])
    lines = [
        f"{heading} Full table (every case x method)",
        "",
        "| case | method | Dice | HD95 mm | TRE mm | EPE mm | SDlogJ | % det<=0 | s | "
        "peak MB (+call) | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        for m in methods:
            entry = results[c].get(m, {})
            status = entry.get("status", "—")
            if status == "ok":
                memory = (
                    f"{entry['peak_rss_mb']:.0f} (+{entry['peak_increase_mb']:.0f})"
                    if entry.get("peak_rss_mb") is not None
                    else "—"
                )
                lines.append(
                    f"| {c} | {labels[m]} | {_fmt(_get(results, c, m, 'mean_dice'))} | "
                    f"{_fmt(_get(results, c, m, 'mean_hd95'), 2)} | "
                    f"{_fmt(_get(results, c, m, 'tre_mean'), 2)} | "
                    f"{_fmt(_get(results, c, m, 'epe_mean'), 2)} | "
                    f"{_fmt(_get(results, c, m, 'sdlogj'))} | "
                    f"{_fmt(_get(results, c, m, 'percent_nonpositive'))} | "
                    f"{_fmt(_get(results, c, m, 'seconds'), 2)} | {memory} | ok |"
                )
            else:
                error = one_line(entry.get("error", entry.get("reason", "")))
                lines.append(f"| {c} | {labels[m]} | | | | | | | | | {status}: {error} |")
    for c in cases:
        if report["cases"][c]["kind"] != "simulated":
            continue
        sim = report["cases"][c].get("simulation", {})
        lines += [
            "",
            f"Simulated case {c}: {sim.get('landmarks')} landmarks in the lungs, "
            f"initial TRE {_fmt(sim.get('landmark_initial_tre_mm'), 2)} mm, max SI motion "
            f"{_fmt(sim.get('max_si_mm'), 1)} mm, AP expansion "
            f"{_fmt(sim.get('ap_expansion_mm'), 1)} mm (seed {sim.get('seed')}).",
        ]
    return lines


def _run_lines(report: dict[str, Any]) -> list[str]:
    return [
        f"Command: `{report['command']}`  ",
        f"Run: {report['started']} to {report['finished']} (UTC)  ",
        f"Machine: {machine_line(report['machine'])}  ",
        f"Settings: quick={report['settings']['quick']}, threads="
        f"{report['settings']['threads'] or 'library default (all cores)'}, per-case "
        f"time limit {_timeout_text(report['settings']['timeout'])}",
    ]


def _timeout_text(timeout: float | None) -> str:
    return "per method (methods table)" if timeout is None else f"{timeout:.0f} s"


_LEGEND = (
    "Times are the registration call alone (seconds, same run, one fresh process per "
    "method after a warm-up); peak MB is the resident memory of the method's process "
    "during the call (+ its increase over the call). Dice/HD95 over the labels of each "
    "case (labels warped through A o (id + u), nearest neighbour); TRE/EPE only on the "
    "simulated case (known truth); SDlogJ (plain) and % det<=0 of x + u(x) on the fixed "
    "grid."
)


def render(report: dict[str, Any]) -> str:
    """The markdown report: machine, methods, pre-alignment, summary, comparison, full table."""
    lines = [
        "# itk-samconvex benchmark suite",
        "",
        *_run_lines(report),
        "",
        _LEGEND,
        "",
        "## Methods",
        "",
        "| method | status | settings | time limit per case |",
        "|---|---|---|---|",
    ]
    for info in report["methods"].values():
        status = "ran" if info["available"] else f"not run: {info['reason']}"
        limit = f"{info['timeout_s']:.0f} s" if info.get("timeout_s") else "—"
        lines.append(f"| {info['label']} | {status} | {info['settings']} | {limit} |")
    lines += [
        "",
        "## Pre-alignment (shared by all methods)",
        "",
        "Rule: identity for pairs from one scanner frame (4DCT phases, the simulated pair), "
        "otherwise one itk-elastix affine per case (not part of any method's time).",
        "",
        "| case | pre-alignment | affine s | note |",
        "|---|---|---|---|",
    ]
    for case, info in report["cases"].items():
        note = one_line(info.get("affine_error") or "")
        lines.append(
            f"| {case} | {info['prealignment']} | {_fmt(info.get('affine_seconds'), 1)} | {note} |"
        )
    lines += [
        "",
        *_summary_lines(report, "##"),
        "",
        *_comparison_lines(report, "##"),
        "",
        *_full_table_lines(report, "##"),
    ]
    return "\n".join(lines) + "\n"


def render_readme_section(report: dict[str, Any], figures: list[str], out: Path) -> str:
    """A README section: command, machine, summary and comparison tables, the figures."""
    try:
        where = out.resolve().relative_to(REPO_ROOT)
    except ValueError:
        where = out.resolve()
    lines = [
        "## Benchmark",
        "",
        "All methods get the same inputs and the same pre-alignment; see "
        "[benchmarks/README.md](benchmarks/README.md) for the protocol and "
        f"[{where}/results.md]({where}/results.md) for the full table (every case x "
        "method).",
        "",
        *_run_lines(report),
        "",
        _LEGEND,
        "",
        *_summary_lines(report, "###"),
        "",
        *_comparison_lines(report, "###"),
        "",
    ]
    lines += [f"![{name}]({where}/{name})" for name in figures]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- figures

_STYLE = {  # method -> (marker, colour)
    "ours-default": ("o", "#d62728"),
    "ours-default-noio": ("o", "#ff9896"),
    "ours-paper": ("P", "#9467bd"),
    "ours-paper-noio": ("P", "#c5b0d5"),
    "convexadam": ("s", "#1f77b4"),
    "elastix-bspline": ("^", "#2ca02c"),
    "ants-syn": ("D", "#ff7f0e"),
    "niftyreg-f3d": ("v", "#8c564b"),
    "identity": ("x", "#7f7f7f"),
}


def plot_dice_vs_runtime(report: dict[str, Any], path: Path) -> bool:
    """Scatter of mean Dice against registration time (log axis); False if nothing to plot."""
    from matplotlib.figure import Figure

    results = report["results"]
    pool = [c for c in report["cases"] if c not in ROBUSTNESS_CASES]
    common = set(common_cases(report))
    figure = Figure(figsize=(8.5, 6.0), layout="constrained")
    axes = figure.subplots()
    plotted = False
    for m, info in report["methods"].items():
        if not info["available"]:
            continue
        points = [
            (_get(results, c, m, "seconds"), _get(results, c, m, "mean_dice"), c) for c in pool
        ]
        points = [(t, d, c) for t, d, c in points if t is not None and d is not None]
        if not points:
            continue
        marker, colour = _STYLE.get(m, ("o", "k"))
        if m == "identity":
            mean_dice = _mean([d for _, d, c in points if c in common]) or _mean(
                [d for _, d, _ in points]
            )
            axes.axhline(
                mean_dice,
                color=colour,
                linestyle="--",
                linewidth=1.0,
                label=f"{info['label']} (mean)",
            )
            continue
        axes.scatter(
            [t for t, _, _ in points],
            [d for _, d, _ in points],
            marker=marker,
            color=colour,
            alpha=0.25,
            s=22,
            linewidths=0,
        )
        chosen = [(t, d) for t, d, c in points if c in common] or [(t, d) for t, d, _ in points]
        axes.scatter(
            [float(np.mean([t for t, _ in chosen]))],
            [float(np.mean([d for _, d in chosen]))],
            marker=marker,
            color=colour,
            s=110,
            edgecolors="black",
            linewidths=0.8,
            label=info["label"],
            zorder=3,
        )
        plotted = True
    if not plotted:
        return False
    axes.set_xscale("log")
    axes.set_xlabel("registration time per case (s, log scale)")
    axes.set_ylabel("mean Dice per case")
    axes.set_title("Dice vs runtime: large = mean over common cases, faint = one case")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.savefig(path, dpi=130)
    return True


def plot_organ_dice(report: dict[str, Any], cases: list[Case], path: Path) -> bool:
    """Per-organ Dice bars per method over the head-neck cases; False if there are none."""
    from matplotlib.figure import Figure

    headneck = [c for c in cases if c.kind == "headneck"]
    if not headneck:
        return False
    labels = sorted({label for c in headneck for label in c.reference.labels})
    names = {label: name for c in headneck for label, name in c.label_names.items()}
    methods = [m for m, info in report["methods"].items() if info["available"]]
    figure = Figure(figsize=(max(9.0, 1.4 * len(labels) + 3), 5.0), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(methods), 1)
    for index, m in enumerate(methods):
        means, spreads = [], []
        for label in labels:
            values = [
                report["results"][c.id].get(m, {}).get("dice", {}).get(str(label))
                for c in headneck
                if report["results"][c.id].get(m, {}).get("status") == "ok"
            ]
            values = [v for v in values if v is not None and math.isfinite(v)]
            means.append(float(np.mean(values)) if values else np.nan)
            spreads.append(float(np.std(values)) if values else 0.0)
        x = np.arange(len(labels)) + (index - (len(methods) - 1) / 2) * width
        axes.bar(
            x,
            means,
            width,
            yerr=spreads,
            capsize=2,
            color=_STYLE.get(m, ("o", "k"))[1],
            label=report["methods"][m]["label"],
            error_kw={"linewidth": 0.6},
        )
    axes.set_xticks(
        np.arange(len(labels)), [names.get(label, str(label)) for label in labels], rotation=20
    )
    axes.set_ylabel("Dice (mean ± std over cases)")
    axes.set_ylim(0.0, 1.0)
    axes.set_title(f"Per-organ Dice over {len(headneck)} head-neck case(s), mean ± std")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncol=3, loc="upper left")
    figure.savefig(path, dpi=130)
    return True


# ------------------------------------------------------------------------------- driver


def select_cases(manifest: dict[str, Any], wanted: list[str]) -> list[dict[str, Any]]:
    """Manifest cases with a moving image, filtered by ``wanted`` (``all``, kinds or ids)."""
    cases = [c for c in manifest["cases"] if c.get("moving")]
    if wanted == ["all"]:
        return cases
    known = {c["id"] for c in cases} | {c["kind"] for c in cases} | {"simulated"}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"unknown case or kind: {', '.join(unknown)}")
    return [c for c in cases if c["id"] in wanted or c["kind"] in wanted]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help="cases manifest; paths in it are relative to its folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/suite"),
        help="results folder (default: %(default)s)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["all"],
        help="'all', kinds (lung, abdomen, headneck, simulated) or case ids",
    )
    parser.add_argument(
        "--methods", nargs="+", default=["all"], help=f"'all' or any of: {', '.join(ALL_METHODS)}"
    )
    parser.add_argument(
        "--no-simulated", action="store_true", help="leave out the simulated lung case"
    )
    parser.add_argument(
        "--simulated-source",
        type=Path,
        default=None,
        help="thoracic CT for the simulated case (default: the manifest's "
        "unlabeled/ibsi_pat1_lung_ct.nii.gz)",
    )
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="seeds of the simulated cases (default: 0)"
    )
    parser.add_argument(
        "--diaphragm-mm",
        type=float,
        nargs="+",
        default=[20.0],
        help="diaphragm amplitude of each simulated case, one per seed (default: 20)",
    )
    parser.add_argument(
        "--both-directions",
        action="store_true",
        help="also register each simulated pair the other way (fixed exhale)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: fewer iterations for the peers (results not comparable with a full run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per method (default: each library's default, i.e. all cores)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per case and method before the process is killed "
        "(default: each method's own limit, see benchmarks/README.md)",
    )
    parser.add_argument(
        "--affine-iterations",
        type=int,
        default=500,
        help="elastix affine iterations per resolution",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep OUT/work (pre-aligned images, affines, simulated case)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = datetime.datetime.now(datetime.UTC)
    command = "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    )
    methods = list(ALL_METHODS) if args.methods == ["all"] else args.methods
    for m in methods:
        make_adapter(m)  # validates the name
    manifest_path = args.manifest.resolve()
    manifest = json.loads(manifest_path.read_text())
    root = manifest_path.parent
    out = args.out
    work = out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    cases: list[Case] = []
    for entry in select_cases(manifest, args.cases):
        logger.info("preparing %s", entry["id"])
        cases.append(load_manifest_case(entry, root, work, args.affine_iterations))
    if not args.no_simulated and (args.cases == ["all"] or "simulated" in args.cases):
        source = args.simulated_source or root / "unlabeled" / "ibsi_pat1_lung_ct.nii.gz"
        if len(args.diaphragm_mm) not in (1, len(args.seed)):
            raise SystemExit("--diaphragm-mm takes one value or one per --seed")
        amplitudes = args.diaphragm_mm * (len(args.seed) if len(args.diaphragm_mm) == 1 else 1)
        for seed, amplitude in zip(args.seed, amplitudes, strict=True):
            for reverse in (False, True) if args.both_directions else (False,):
                logger.info(
                    "generating the simulated lung case (seed %d, %g mm%s) from %s",
                    seed,
                    amplitude,
                    ", reversed" if reverse else "",
                    source,
                )
                cases.append(simulated_case(source, seed, work, amplitude, reverse))
    if not cases:
        raise SystemExit("no case selected")

    report: dict[str, Any] = {
        "command": command,
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "threads": args.threads,
            "timeout": args.timeout,
            "seeds": args.seed,
            "diaphragm_mm": args.diaphragm_mm,
            "both_directions": args.both_directions,
            "manifest": str(manifest_path),
            "robustness_cases": list(ROBUSTNESS_CASES),
        },
        "methods": {},
        "cases": {
            c.id: {
                "kind": c.kind,
                **c.info,
                "labels": {str(k): v for k, v in c.label_names.items()},
            }
            for c in cases
        },
        "results": {c.id: {} for c in cases},
    }
    for m in methods:
        adapter = make_adapter(m, quick=args.quick, threads=args.threads)
        reason = adapter.unavailable()
        report["methods"][m] = {
            "label": adapter.label,
            "peer": adapter.peer,
            "available": reason is None,
            "reason": reason,
            "settings": adapter.describe(),
        }
        if reason is not None:
            logger.warning("%s not run: %s", m, reason)
            for c in cases:
                report["results"][c.id][m] = {"status": "not run", "reason": reason}
            continue
        timeout = args.timeout or adapter.timeout_s
        report["methods"][m]["timeout_s"] = timeout
        outcomes, info = run_method(m, cases, args.quick, args.threads, timeout, work)
        report["methods"][m].update(info)
        for c in cases:
            report["results"][c.id][m] = score_outcome(c, outcomes[c.id])
    report["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")

    report = _clean(report)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = render(report)
    figures = []
    if plot_dice_vs_runtime(report, out / "dice_vs_runtime.png"):
        figures.append("dice_vs_runtime.png")
    if plot_organ_dice(report, cases, out / "organ_dice.png"):
        figures.append("organ_dice.png")
    if figures:
        table += "\n" + "\n".join(f"![{name}]({name})" for name in figures) + "\n"
    (out / "results.md").write_text(table, encoding="utf-8")
    (out / "readme_section.md").write_text(
        render_readme_section(report, figures, out), encoding="utf-8"
    )
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
