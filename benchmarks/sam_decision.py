"""The SAM decision: MIND vs SAM vs SAM+MIND on unseen patients, and the capture range.

Two pair sets, both of patients the packaged SAM never saw (it trained on the OpenKBP
``train`` split only):

* ``validation``: pairs among the 33 ``validation``-split patients of
  ``shared/data/corpus/openkbp`` (consecutive patients in id order, each pair with at least 4
  OARs contoured in both; Dice over the OARs in common), for choosing;
* ``evaluation``: the 12 head-neck pairs of ``MANIFEST.json``, for reporting.

Every pair gets the project's default pre-alignment (``elastix_prealignment``: translation
search + itk-elastix affine, with its fallbacks), computed once per pair and shared by every
method. Each method runs warm in this process (after a warm-up) and is scored by the package's
scorer (``common.score``: Dice over the common OARs, SDlogJ and % det <= 0 of the deformable
part). With ``--capture`` the evaluation pairs are also registered from the translation of
``search_translation`` alone (no affine): MIND, SAM+MIND and ConvexAdam under both starts.

Usage::

    python benchmarks/sam_decision.py --out benchmarks/results/sam_decision \\
        [--checkpoint FILE] [--sets validation evaluation] [--capture] [--set NAME=VALUE]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import DEFAULT_DATA, Reference, machine_info, machine_line, score

logger = logging.getLogger("benchmark.sam_decision")
#: The capture-range comparison (the paper's Table 2 claim): MIND vs SAM+MIND (and ConvexAdam).
CAPTURE_FEATURES = ("mind", "sam+mind")
OAR_IDS = {
    "Brainstem": 1,
    "SpinalCord": 2,
    "RightParotid": 3,
    "LeftParotid": 4,
    "Esophagus": 5,
    "Larynx": 6,
    "Mandible": 7,
}


def validation_pairs(data: Path, count: int, min_common: int = 4) -> list[dict[str, Any]]:
    """Consecutive validation patients (id order) with >= ``min_common`` OARs in common."""
    corpus = json.loads((data / "corpus" / "openkbp" / "corpus.json").read_text())
    patients = sorted(
        (v for v in corpus["volumes"] if v["split"] == "validation"),
        key=lambda v: int(v["id"].rsplit("pt", 1)[1]),
    )
    pairs = []
    for offset in (1, 2, 3):
        for a, b in zip(patients, patients[offset:], strict=False):
            common = sorted(set(a["oars_present"]) & set(b["oars_present"]))
            if len(common) >= min_common:
                folder = Path("corpus") / "openkbp"
                pairs.append(
                    {
                        "id": f"val_{a['id']}_vs_{b['id']}",
                        "fixed": str(folder / a["ct"]),
                        "moving": str(folder / b["ct"]),
                        "fixed_labels": str(folder / a["labels"]),
                        "moving_labels": str(folder / b["labels"]),
                        "labels": [OAR_IDS[n] for n in common],
                    }
                )
            if len(pairs) == count:
                return pairs
    return pairs


def evaluation_pairs(data: Path) -> list[dict[str, Any]]:
    manifest = json.loads((data / "MANIFEST.json").read_text())
    return [
        {**c, "labels": list(range(1, 8))} for c in manifest["cases"] if c["kind"] == "headneck"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sam_decision"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--checkpoint", default=None, help="SAM weights (default: the packaged ones)"
    )
    parser.add_argument("--sets", nargs="+", default=["validation", "evaluation"])
    parser.add_argument("--validation-pairs", type=int, default=24)
    parser.add_argument("--features", nargs="+", default=["mind", "sam", "sam+mind"])
    parser.add_argument(
        "--capture",
        action="store_true",
        help="also the translation-only start (evaluation pairs) with ConvexAdam",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder caching the pre-alignments (default: OUT/work)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="NAME=VALUE overrides of the SAM runs (e.g. sam_weight=0.5)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import itk

    from itk_samconvex.edge.elastix import elastix_prealignment
    from itk_samconvex.edge.io import read_transform, write_transform
    from itk_samconvex.edge.prealign import search_translation
    from itk_samconvex.edge.registration import register
    from itk_samconvex.solver.config import parse_toml_value, preset_config

    sam_extra = {k: parse_toml_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.checkpoint:
        sam_extra["sam_checkpoint"] = args.checkpoint
    configs = {
        f: preset_config("default", device="cpu", features=f, **({} if f == "mind" else sam_extra))
        for f in args.features
    }
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = {}
    if "validation" in args.sets:
        sets["validation"] = validation_pairs(args.data, args.validation_pairs)
    if "evaluation" in args.sets:
        sets["evaluation"] = evaluation_pairs(args.data)

    # warm-up: imports, ITK module loading, the SAM weights
    first = next(iter(sets.values()))[0]
    warm_f = itk.imread(str(args.data / first["fixed"]), itk.F)
    for cfg in configs.values():
        register(warm_f, warm_f, cfg)
    convexadam = None
    if args.capture:
        from adapters import ConvexAdam, PairInputs, prealign

        convexadam = ConvexAdam()
        convexadam.warm_up()

    rows: list[dict[str, Any]] = []
    for set_name, pairs in sets.items():
        for pair in pairs:
            fixed = itk.imread(str(args.data / pair["fixed"]), itk.F)
            moving = itk.imread(str(args.data / pair["moving"]), itk.F)
            fixed_labels = itk.imread(str(args.data / pair["fixed_labels"]))
            moving_labels = itk.imread(str(args.data / pair["moving_labels"]))
            starts = {"affine": None}
            cached = work / f"{pair['id']}_affine.h5"
            if cached.is_file():
                starts["affine"] = read_transform(cached)
                pre = json.loads(cached.with_suffix(".json").read_text())
            else:
                result = elastix_prealignment(fixed, moving, pair=pair["id"])
                write_transform(result.transform, cached, overwrite=True)
                pre = result.to_dict()
                cached.with_suffix(".json").write_text(json.dumps(pre))
                starts["affine"] = read_transform(cached)
            if args.capture and set_name == "evaluation":
                starts["translation"] = search_translation(fixed, moving).transform()
            for start_name, start in starts.items():
                reference = Reference(
                    fixed=fixed,
                    affine=start,
                    fixed_labels=fixed_labels,
                    moving_labels=moving_labels,
                    labels=pair["labels"],
                )
                for feature, cfg in configs.items():
                    if start_name == "translation" and feature not in CAPTURE_FEATURES:
                        continue
                    tick = time.perf_counter()
                    result = register(fixed, moving, cfg, initial_transform=start)
                    seconds = time.perf_counter() - tick
                    field = np.asarray(itk.array_view_from_image(result.deformable_field))
                    s = score(reference, field)
                    rows.append(
                        {
                            "set": set_name,
                            "pair": pair["id"],
                            "start": start_name,
                            "method": feature,
                            "dice": s["mean_dice"],
                            "sdlogj": s["sdlogj"],
                            "folding": s["percent_nonpositive"],
                            "seconds": seconds,
                            "prealignment": pre["method"],
                            "fallback": pre.get("fallback"),
                        }
                    )
                    logger.info(
                        "%-10s %-34s %-11s %-9s Dice %.3f SDlogJ %.3f %.2f s",
                        set_name,
                        pair["id"],
                        start_name,
                        feature,
                        s["mean_dice"],
                        s["sdlogj"],
                        seconds,
                    )
                if convexadam is not None and set_name == "evaluation":
                    inputs = PairInputs(
                        fixed, moving, start, prealign(fixed, moving, start), work / "convexadam"
                    )
                    inputs.workdir.mkdir(exist_ok=True)
                    tick = time.perf_counter()
                    field = convexadam.register(inputs)
                    seconds = time.perf_counter() - tick
                    s = score(reference, field)
                    rows.append(
                        {
                            "set": set_name,
                            "pair": pair["id"],
                            "start": start_name,
                            "method": "convexadam",
                            "dice": s["mean_dice"],
                            "sdlogj": s["sdlogj"],
                            "folding": s["percent_nonpositive"],
                            "seconds": seconds,
                            "prealignment": pre["method"],
                            "fallback": pre.get("fallback"),
                        }
                    )
                    logger.info(
                        "%-10s %-34s %-11s %-9s Dice %.3f SDlogJ %.3f %.2f s",
                        set_name,
                        pair["id"],
                        start_name,
                        "convexadam",
                        s["mean_dice"],
                        s["sdlogj"],
                        seconds,
                    )

    summary: dict[str, Any] = {}
    for set_name in sets:
        for start_name in ("affine", "translation"):
            for method in [*configs, "convexadam"]:
                mine = [
                    r
                    for r in rows
                    if (r["set"], r["start"], r["method"]) == (set_name, start_name, method)
                ]
                if not mine:
                    continue
                summary[f"{set_name}/{start_name}/{method}"] = {
                    "pairs": len(mine),
                    "mean_dice": float(np.mean([r["dice"] for r in mine])),
                    "mean_sdlogj": float(np.mean([r["sdlogj"] for r in mine])),
                    "max_folding": float(np.max([r["folding"] for r in mine])),
                    "mean_folding": float(np.mean([r["folding"] for r in mine])),
                    "mean_seconds": float(np.mean([r["seconds"] for r in mine])),
                }
    decision = {}
    for set_name in sets:
        mind = summary.get(f"{set_name}/affine/mind")
        for method in ("sam", "sam+mind"):
            other = summary.get(f"{set_name}/affine/{method}")
            if mind and other:
                decision[f"{set_name}/{method}"] = {
                    "dice_gain": other["mean_dice"] - mind["mean_dice"],
                    "sdlogj_ratio": other["mean_sdlogj"] / mind["mean_sdlogj"],
                    "max_folding": other["max_folding"],
                    "passes": bool(
                        other["mean_dice"] >= mind["mean_dice"] + 0.02
                        and other["mean_sdlogj"] <= 1.25 * mind["mean_sdlogj"]
                        and other["max_folding"] == 0.0
                    ),
                }
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "machine": machine_info(),
                "command_sets": args.sets,
                "sam_overrides": sam_extra,
                "rows": rows,
                "summary": summary,
                "decision": decision,
            },
            indent=2,
        )
        + "\n"
    )
    print(machine_line(machine_info()))
    print("| set / start / method | pairs | mean Dice | SDlogJ | % det<=0 (max) | s/pair |")
    print("|---|---|---|---|---|---|")
    for key, s in summary.items():
        print(
            f"| {key} | {s['pairs']} | {s['mean_dice']:.4f} | {s['mean_sdlogj']:.4f} | "
            f"{s['max_folding']:.4f} | {s['mean_seconds']:.2f} |"
        )
    for key, d in decision.items():
        print(
            f"{key}: dice gain {d['dice_gain']:+.4f}, SDlogJ ratio {d['sdlogj_ratio']:.3f}, "
            f"max folding {d['max_folding']:.4f}: {'passes' if d['passes'] else 'fails'}"
        )


if __name__ == "__main__":
    main()
