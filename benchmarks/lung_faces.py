"""Where lung-mask Dice is lost on the shared 4DCT pair: at the crop's faces or inside.

The 4DCT pair of ``../shared/data`` is a crop of two phases on one box (same grid). This
script registers it with ours (the default, and with ``fov_anchor="off"``) and ConvexAdam,
warps the moving lung mask with each field (the suite's scorer) and counts the mismatched
voxels (false positives + false negatives) by their distance to the nearest face of the box.
It also scores the fields against lung masks rebuilt by the data README's recipe (HU < -400,
opening, largest component, closing, 2-D hole filling) computed on a volume padded by its
border values: the shipped masks are that recipe without padding, whose closing erodes the
two outer voxels at every face (the script checks that the recipe reproduces them exactly).

Usage::

    python benchmarks/lung_faces.py --out benchmarks/results/lung_faces
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from adapters import Ours, PairInputs, make_adapter, prealign
from common import DEFAULT_DATA, Reference, machine_info, machine_line, score, warp_labels

logger = logging.getLogger("benchmark.lung_faces")

#: mismatches are counted in these bands of distance (voxels) to the nearest face
BANDS = ((0, 3), (3, 8), (8, 10_000))
PADDING = 4  # voxels of border padding for the rebuilt masks (more than the closing reaches)


def lung_mask_recipe(ct: np.ndarray, pad: bool) -> np.ndarray:
    """The data README's lung mask of a (Z, Y, X) CT in HU; ``pad``: no erosion at the faces."""
    from scipy import ndimage

    mask = ct < -400
    if pad:
        mask = np.pad(mask, PADDING, mode="edge")
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, _ = ndimage.label(mask)
    mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    mask = ndimage.binary_closing(mask, iterations=2)
    if pad:
        mask = mask[PADDING:-PADDING, PADDING:-PADDING, PADDING:-PADDING]
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask.astype(np.uint8)


def face_distance(shape: tuple[int, ...]) -> np.ndarray:
    """(Z, Y, X) voxels to the nearest face of the array (0 on the outer layer)."""
    index = np.indices(shape)
    return np.minimum.reduce([np.minimum(index[a], n - 1 - index[a]) for a, n in enumerate(shape)])


def mismatch_by_band(fixed: np.ndarray, warped: np.ndarray) -> dict[str, int]:
    distance = face_distance(fixed.shape)
    wrong = fixed != warped
    return {f"{lo}-{hi}": int(wrong[(distance >= lo) & (distance < hi)].sum()) for lo, hi in BANDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lung_faces"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import itk

    manifest = json.loads((DEFAULT_DATA / "MANIFEST.json").read_text())
    entry = next(c for c in manifest["cases"] if c["kind"] == "lung")
    fixed = itk.imread(str(DEFAULT_DATA / entry["fixed"]), itk.F)
    moving = itk.imread(str(DEFAULT_DATA / entry["moving"]), itk.F)
    shipped = {k: itk.imread(str(DEFAULT_DATA / entry[f"{k}_labels"])) for k in ("fixed", "moving")}
    rebuilt = {}
    recipe_check = {}
    for key, image in (("fixed", fixed), ("moving", moving)):
        ct = itk.array_from_image(image)
        plain = lung_mask_recipe(ct, pad=False).astype(bool)
        recipe_check[key] = int((plain != (itk.array_from_image(shipped[key]) > 0)).sum())
        mask = itk.image_from_array(lung_mask_recipe(ct, pad=True))
        mask.CopyInformation(image)
        rebuilt[key] = mask
    references = {
        "shipped masks": Reference(fixed, None, shipped["fixed"], shipped["moving"], [1]),
        "masks without face erosion": Reference(
            fixed, None, rebuilt["fixed"], rebuilt["moving"], [1]
        ),
    }
    methods: list[tuple[str, Any]] = [
        ("ours (default)", make_adapter("ours-default", threads=args.threads)),
        ("ours, fov_anchor off", Ours("default", True, threads=args.threads, fov_anchor="off")),
        ("ConvexAdam", make_adapter("convexadam", threads=args.threads)),
        ("identity", make_adapter("identity")),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        inputs = PairInputs(fixed, moving, None, prealign(fixed, moving, None), Path(scratch))
        for name, adapter in methods:
            tick = time.perf_counter()
            field = adapter.register(inputs)
            seconds = time.perf_counter() - tick
            row: dict[str, Any] = {"method": name, "seconds": seconds}
            for label, ref in references.items():
                scores = score(ref, field)
                fixed_mask = itk.array_from_image(ref.fixed_labels) > 0
                row[label] = {
                    "dice": scores["mean_dice"],
                    "hd95": scores["mean_hd95"],
                    "mismatch_by_face_distance": mismatch_by_band(
                        fixed_mask, warp_labels(ref, field) == 1
                    ),
                }
            row["percent_nonpositive"] = scores["percent_nonpositive"]
            rows.append(row)
            logger.info(
                "%-22s Dice %.4f (shipped) %.4f (no face erosion) %.1f s",
                name,
                row["shipped masks"]["dice"],
                row["masks without face erosion"]["dice"],
                seconds,
            )
    info = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"machine": info, "recipe_check": recipe_check, "rows": rows}, indent=1)
    )
    bands = [f"{lo}-{hi if hi < 10_000 else ''}" for lo, hi in BANDS]
    lines = [
        "# Lung-mask Dice on the 4DCT pair by distance to the crop's faces",
        "",
        f"Machine: {machine_line(info)}. The recipe reproduces the shipped masks with "
        f"{recipe_check['fixed']} / {recipe_check['moving']} differing voxels (fixed / moving).",
        "",
        "| method | Dice shipped | HD95 mm | mismatches at 0-3 / 3-8 / 8+ voxels from a face "
        "| Dice, masks without face erosion | mismatches (same bands) | % det<=0 | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        a, b = row["shipped masks"], row["masks without face erosion"]
        lines.append(
            f"| {row['method']} | {a['dice']:.4f} | {a['hd95']:.2f} | "
            + " / ".join(str(v) for v in a["mismatch_by_face_distance"].values())
            + f" | {b['dice']:.4f} | "
            + " / ".join(str(v) for v in b["mismatch_by_face_distance"].values())
            + f" | {row['percent_nonpositive']:.4f} | {row['seconds']:.1f} |"
        )
    lines += ["", f"Bands (voxels to the nearest face): {', '.join(bands)}."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
