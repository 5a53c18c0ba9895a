"""Lung parameter sweep: our registration with several settings on the lung cases, one run.

Cases: the 4DCT pair of ``../shared/data`` (lung-mask Dice) and simulated inhale/exhale pairs
with a known motion (``simulated_lung.py``; TRE at the lung landmarks, EPE in the body), for
the seeds and diaphragm amplitudes given, in both directions. Each setting is a set of
``SAMConvexConfig`` overrides on the default preset; every setting runs on every case in this
process (warm) and is scored by the package's scorer (``common.score``). This is the tool
that chose the lung defaults; the reported comparison with the peers is ``suite.py``.

Usage::

    python benchmarks/lung_sweep.py --out benchmarks/results/lung_sweep \\
        --setting default --setting io_grid_factor=1 --setting "io_regularization=0.5"
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import DEFAULT_DATA, machine_info, machine_line, score
from suite import load_manifest_case, simulated_case

logger = logging.getLogger("benchmark.lung_sweep")


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    from itk_samconvex.solver.config import parse_toml_value

    if text == "default":
        return text, {}
    overrides = {}
    for item in text.split(";"):
        name, value = item.split("=", 1)
        overrides[name.strip()] = parse_toml_value(value.strip())
    return text, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lung_sweep"))
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        help="'default' or NAME=VALUE[;NAME=VALUE...] (repeatable)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--diaphragm-mm", type=float, nargs="+", default=[12.0, 20.0, 28.0])
    parser.add_argument("--one-direction", action="store_true")
    parser.add_argument("--no-4dct", action="store_true")
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import itk

    from itk_samconvex.edge.registration import register
    from itk_samconvex.solver.config import preset_config

    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    if not args.no_4dct:
        manifest = json.loads((DEFAULT_DATA / "MANIFEST.json").read_text())
        entry = next(c for c in manifest["cases"] if c["kind"] == "lung")
        cases.append(load_manifest_case(entry, DEFAULT_DATA, work, 500))
    source = DEFAULT_DATA / "unlabeled" / "ibsi_pat1_lung_ct.nii.gz"
    for seed, amplitude in zip(args.seeds, args.diaphragm_mm, strict=True):
        for reverse in (False,) if args.one_direction else (False, True):
            cases.append(simulated_case(source, seed, work, amplitude, reverse))
    settings = [parse_setting(s) for s in (args.setting or ["default"])]
    rows = []
    for name, overrides in settings:
        cfg = preset_config(args.preset, device="cpu", **overrides)
        for case in cases:
            ref = case.reference
            moving = itk.imread(str(case.moving_path), itk.F)
            tick = time.perf_counter()
            result = register(ref.fixed, moving, cfg, initial_transform=ref.affine)
            seconds = time.perf_counter() - tick
            field = np.asarray(itk.array_view_from_image(result.deformable_field))
            scores = score(ref, field)
            row = {
                "setting": name,
                "case": case.id,
                "seconds": seconds,
                "dice": scores.get("mean_dice"),
                "tre": scores.get("tre_mean"),
                "epe": scores.get("epe_mean"),
                "sdlogj": scores["sdlogj"],
                "folding": scores["percent_nonpositive"],
                "choices": getattr(result, "choices", {}),
            }
            rows.append(row)
            logger.info(
                "%-40s %-45s Dice %s TRE %s EPE %s SDlogJ %.3f fold %.4f %.1f s",
                name[:40],
                case.id,
                *(f"{row[k]:.4f}" if row[k] is not None else "-" for k in ("dice", "tre", "epe")),
                row["sdlogj"],
                row["folding"],
                seconds,
            )
    summary = {}
    for name, _ in settings:
        mine = [r for r in rows if r["setting"] == name]
        sims = [r for r in mine if r["tre"] is not None]

        def mean(key: str, of: list[dict[str, Any]]) -> float | None:
            values = [r[key] for r in of if r[key] is not None]
            return float(np.mean(values)) if values else None

        summary[name] = {
            "dice_4dct": next((r["dice"] for r in mine if r["tre"] is None), None),
            "tre_mean": mean("tre", sims),
            "epe_mean": mean("epe", sims),
            "sdlogj_mean": mean("sdlogj", mine),
            "folding_max": max(r["folding"] for r in mine),
            "seconds_mean": mean("seconds", mine),
        }
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine_info(), "rows": rows, "summary": summary}, indent=2) + "\n"
    )
    print(machine_line(machine_info()))
    print("| setting | 4DCT Dice | sim TRE mm | sim EPE mm | SDlogJ | max % det<=0 | s |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        cells = [
            f"{s[k]:.4f}" if s[k] is not None else "-"
            for k in (
                "dice_4dct",
                "tre_mean",
                "epe_mean",
                "sdlogj_mean",
                "folding_max",
                "seconds_mean",
            )
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
