"""The bad-input matrix: every case exits with its code and message, no traceback, and every
input's bytes unchanged afterwards. Crafted files are written here (the huge header costs a
few hundred bytes, not gigabytes)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import itk
import numpy as np
import pytest

from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.cli import main

QUICK = ["--preset", "fast", "--set", "working_spacing_mm=8.0", "--set", "io_iterations=2", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_inputs")
    pair = make_phantom_pair(size=(40, 36, 32), spacing=(8.0, 8.0, 8.0))
    paths = {}
    for name in ("fixed", "moving", "fixed_labels", "moving_labels"):
        paths[name] = folder / f"{name}.nii.gz"
        itk.imwrite(getattr(pair, name), str(paths[name]), compression=True)
    return paths


def digest(paths) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if Path(p).is_file()
    }


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return code, captured.err


def register(fixed, moving, out, *extra) -> list[str]:
    return ["register", str(fixed), str(moving), "-o", str(out), *QUICK, *extra]


# ---------------------------------------------------------------------------------------------
# crafted files


def nifti(path: Path, array: np.ndarray, spacing=(8.0, 8.0, 8.0)) -> Path:
    image = itk.image_from_array(array)
    image.SetSpacing([float(s) for s in spacing])
    itk.imwrite(image, str(path), compression=str(path).endswith(".gz"))
    return path


def patch_nifti(path: Path, offset: int, fmt: str, *values) -> Path:
    """Overwrite header bytes of a NIfTI-1 file (gzip or not)."""
    gz = str(path).endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


def huge_header(path: Path) -> Path:
    """A NIfTI-1 header declaring 2000^3 int16 voxels, followed by almost no data."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 2000, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + bytes(64))
    return path


# ---------------------------------------------------------------------------------------------
# the matrix: (case, build(inputs, tmp) -> argv, exit code, message key words)


def _outputs_are_inputs(inputs, tmp):
    out = tmp / "out"
    out.mkdir()
    moving = shutil.copy(inputs["moving"], out / "warped.nii.gz")
    fixed = shutil.copy(inputs["fixed"], out / "field.nii.gz")
    return register(fixed, moving, out, "--write-field", "--overwrite")


def _symlinked_output(inputs, tmp):
    out = tmp / "out"
    out.mkdir()
    os.symlink(inputs["moving_labels"], out / "warped_labels.nii.gz")
    return register(
        inputs["fixed"],
        inputs["moving"],
        out,
        "--overwrite",
        "--moving-labels",
        str(inputs["moving_labels"]),
    )


def _nan_nifti(inputs, tmp):
    array = np.full((32, 36, 40), np.nan, np.float32)
    return register(inputs["fixed"], nifti(tmp / "nan.nii.gz", array), tmp / "out")


def _inf_block_nifti(inputs, tmp):
    array = itk.array_from_image(itk.imread(str(inputs["moving"]), itk.F))
    array[5:10, 5:10, 5:10] = np.inf
    return register(nifti(tmp / "inf.nii", array), inputs["moving"], tmp / "out")


def _zero_spacing(inputs, tmp):
    array = itk.array_from_image(itk.imread(str(inputs["moving"]), itk.F))
    path = patch_nifti(nifti(tmp / "zero.nii.gz", array), 80, "<f", 0.0)  # pixdim[1]
    return register(inputs["fixed"], path, tmp / "out")


def _nan_origin(inputs, tmp):
    array = itk.array_from_image(itk.imread(str(inputs["moving"]), itk.F))
    path = patch_nifti(nifti(tmp / "origin.nii", array), 268, "<f", float("nan"))  # qoffset_x
    return register(inputs["fixed"], path, tmp / "out")


def _huge(inputs, tmp):
    return register(huge_header(tmp / "huge.nii"), inputs["moving"], tmp / "out")


def _constant(inputs, tmp):
    path = nifti(tmp / "air.nii.gz", np.full((32, 36, 40), -1000, np.int16))
    return register(path, inputs["moving"], tmp / "out")


def _constant_moving(inputs, tmp):
    path = nifti(tmp / "water.nii.gz", np.zeros((32, 36, 40), np.int16))
    return register(inputs["fixed"], path, tmp / "out")


def _label_map(inputs, tmp):
    return register(inputs["fixed"], inputs["moving_labels"], tmp / "out")


def _output_under_a_file(inputs, tmp):
    return register(inputs["fixed"], inputs["moving"], Path("/dev/null/out"))


def _output_is_a_file(inputs, tmp):
    (tmp / "taken").write_text("a file")
    return register(inputs["fixed"], inputs["moving"], tmp / "taken")


def _output_not_writable(inputs, tmp):
    return register(inputs["fixed"], inputs["moving"], Path("/proc/samconvex-out"))


def _missing(inputs, tmp):
    return register(tmp / "nothere.nii.gz", inputs["moving"], tmp / "out")


def _empty_file(inputs, tmp):
    (tmp / "empty.nii.gz").write_bytes(b"")
    return register(tmp / "empty.nii.gz", inputs["moving"], tmp / "out")


def _truncated(inputs, tmp):
    data = inputs["moving"].read_bytes()
    (tmp / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return register(inputs["fixed"], tmp / "cut.nii.gz", tmp / "out")


def _two_d(inputs, tmp):
    image = itk.image_from_array(np.zeros((30, 30), np.float32))
    itk.imwrite(image, str(tmp / "flat.nii.gz"))
    return register(tmp / "flat.nii.gz", inputs["moving"], tmp / "out")


def _vector(inputs, tmp):
    image = itk.Image[itk.Vector[itk.F, 3], 3].New()
    image.SetRegions([8, 8, 8])
    image.Allocate()
    itk.imwrite(image, str(tmp / "vector.mha"))
    return register(inputs["fixed"], tmp / "vector.mha", tmp / "out")


def _nan_mha(inputs, tmp):
    image = itk.imread(str(inputs["fixed"]), itk.F)
    itk.array_view_from_image(image)[3, 3, 3] = np.nan
    itk.imwrite(image, str(tmp / "nan.mha"))
    return register(tmp / "nan.mha", inputs["moving"], tmp / "out")


def _not_orthonormal(inputs, tmp):
    image = itk.imread(str(inputs["fixed"]), itk.F)
    image.SetDirection(np.diag([1.0, 1.0, 2.0]))
    itk.imwrite(image, str(tmp / "skew.mha"))
    return register(tmp / "skew.mha", inputs["moving"], tmp / "out")


def _empty_mask(inputs, tmp):
    mask = itk.imread(str(inputs["fixed_labels"]))
    itk.array_view_from_image(mask)[:] = 0
    itk.imwrite(mask, str(tmp / "mask.nii.gz"))
    return register(
        inputs["fixed"], inputs["moving"], tmp / "out", "--fixed-mask", str(tmp / "mask.nii.gz")
    )


def _mask_elsewhere(inputs, tmp):
    mask = itk.imread(str(inputs["moving_labels"]))
    mask.SetOrigin([5.0, 0.0, 0.0])
    itk.imwrite(mask, str(tmp / "mask.nii.gz"))
    return register(
        inputs["fixed"], inputs["moving"], tmp / "out", "--moving-mask", str(tmp / "mask.nii.gz")
    )


def _no_overlap(inputs, tmp):
    far = itk.TranslationTransform[itk.D, 3].New()
    far.SetOffset([5000.0, 0.0, 0.0])
    itk.transformwrite([far], str(tmp / "far.tfm"))
    return register(
        inputs["fixed"], inputs["moving"], tmp / "out", "--initial-transform", str(tmp / "far.tfm")
    )


def _cuda(inputs, tmp):
    return register(inputs["fixed"], inputs["moving"], tmp / "out", "--device", "cuda:0")


CASES = [
    ("outputs are inputs", _outputs_are_inputs, 2, ["is the input", "never writes over an input"]),
    ("output symlinked to an input", _symlinked_output, 2, ["is the input"]),
    ("all-NaN float NIfTI", _nan_nifti, 2, ["stores 46080 NaN or infinite", "NIfTI reader"]),
    ("block of Inf in a NIfTI", _inf_block_nifti, 2, ["stores 125 NaN or infinite"]),
    ("zero spacing in a NIfTI header", _zero_spacing, 2, ["zero voxel size", "reads as 1 mm"]),
    ("non-finite origin in a NIfTI header", _nan_origin, 2, ["non-finite origin"]),
    (
        "header declaring 2000^3 voxels",
        _huge,
        2,
        ["declares 2000x2000x2000 voxels", "GB of memory is available", "downsample"],
    ),
    ("constant fixed image", _constant, 2, ["fixed image is constant", "-1000"]),
    ("constant moving image", _constant_moving, 2, ["moving image is constant"]),
    ("label map as the moving image", _label_map, 2, ["does not look like a CT", "--no-ct-check"]),
    ("output folder under a file", _output_under_a_file, 2, ["/dev/null", "not a folder"]),
    ("output folder is a file", _output_is_a_file, 2, ["taken", "is a file, not a folder"]),
    (
        "output folder not creatable",
        _output_not_writable,
        2,
        ["cannot create output folder", "/proc/samconvex-out"],
    ),
    ("missing input", _missing, 2, ["nothere.nii.gz does not exist"]),
    ("empty file", _empty_file, 2, ["empty.nii.gz is an empty file"]),
    ("truncated gzip", _truncated, 2, ["damaged or truncated"]),
    ("2-D image", _two_d, 2, ["is 2-D", "3-D"]),
    ("vector pixels", _vector, 2, ["3 components per voxel"]),
    ("NaN voxel in an .mha", _nan_mha, 2, ["1 NaN or infinite", "-1024 HU"]),
    ("direction not orthonormal", _not_orthonormal, 2, ["not orthonormal"]),
    ("empty mask", _empty_mask, 2, ["fixed_mask is empty"]),
    ("mask off its image's grid", _mask_elsewhere, 2, ["moving_mask is not on the grid"]),
    ("no overlap after the initial transform", _no_overlap, 2, ["does not overlap"]),
    ("cuda without CUDA", _cuda, 2, ["sees no CUDA device"]),
]


@pytest.mark.parametrize(("case", "build", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, build, code, words, inputs, tmp_path, capsys, record_property):
    if case == "cuda without CUDA":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    argv = build(inputs, tmp_path)
    files = [*inputs.values(), *[p for p in tmp_path.rglob("*") if p.is_file()]]
    before = digest(files)
    exit_code, err = run(argv, capsys)
    record_property("exit_code", exit_code)  # the matrix as a table: pytest --junitxml
    record_property("message", err.strip())
    assert exit_code == code, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert err.startswith("samconvex: error: ") and err.count("\n") == 1  # one line
    assert digest(files) == before  # every input byte-identical
    out = Path(argv[argv.index("-o") + 1])
    if case not in (
        "outputs are inputs",
        "output symlinked to an input",
        "output folder is a file",
        "output folder under a file",
        "output folder not creatable",
    ):
        assert not out.exists(), "a failed run left a new output folder behind"


def test_small_image_warns_in_the_console_and_the_report(inputs, tmp_path, capsys):
    image = itk.imread(str(inputs["fixed"]))
    small = itk.region_of_interest_image_filter(
        image, region_of_interest=itk.ImageRegion[3]([8, 8, 8], [6, 6, 6])
    )
    itk.imwrite(small, str(tmp_path / "small.nii.gz"))
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(tmp_path / "small.nii.gz"),
            str(inputs["moving"]),
            "-o",
            str(out),
            "--no-qc",
            "--preset",
            "fast",
            "--set",
            "working_spacing_mm=8.0",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "fixed image is small (6x6x6 voxels" in captured.err + captured.out
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] and report["warnings"][0].startswith("fixed image is small")


def test_stale_temporaries_of_killed_runs_are_cleaned_and_nothing_else(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = out / f".samconvex-tmp.{dead}.0123456789ab.transform.h5"
    stale.write_bytes(b"x" * 1000)
    alive = out / f".samconvex-tmp.{os.getpid()}.0123456789ab.warped.nii.gz"
    alive.write_bytes(b"in progress")
    other = out / ".transform.h5.notours.h5"
    other.write_bytes(b"someone else's")
    code, err = run(register(inputs["fixed"], inputs["moving"], out, "--no-qc"), capsys)
    assert code == 0, err
    assert not stale.exists()
    assert alive.exists() and other.exists()  # a live process's file, and a foreign file


def test_failed_run_leaves_no_new_folder_but_keeps_an_existing_one(inputs, tmp_path, capsys):
    constant = nifti(tmp_path / "air.nii.gz", np.full((32, 36, 40), -1000, np.int16))
    new = tmp_path / "a" / "b" / "out"
    code, _ = run(register(constant, inputs["moving"], new), capsys)
    assert code == 2 and not (tmp_path / "a").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _ = run(register(constant, inputs["moving"], existing), capsys)
    assert code == 2 and existing.is_dir()
