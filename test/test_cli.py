"""The ``samconvex`` command, run in-process through ``cli.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import itk
import numpy as np
import pytest
import torch

from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.cli import main

QUICK = ["--set", "working_spacing_mm=6.0", "--set", "io_iterations=10", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small phantom pair written to disk as NIfTI, with labels and an affine."""
    folder = tmp_path_factory.mktemp("inputs")
    pair = make_phantom_pair(size=(56, 48, 40), spacing=(6.0, 6.0, 6.0), amplitude_mm=10.0)
    paths = {
        name: folder / f"{name}.nii.gz"
        for name in ("fixed", "moving", "fixed_labels", "moving_labels")
    }
    for name, path in paths.items():
        itk.imwrite(getattr(pair, name), str(path), compression=True)
    shift = itk.TranslationTransform[itk.D, 3].New()
    shift.SetOffset([2.0, -1.0, 1.5])
    paths["initial"] = folder / "initial.h5"
    itk.transformwrite([shift], str(paths["initial"]))
    return paths


def test_register_writes_every_output(files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(files["fixed"]),
            str(files["moving"]),
            "-o",
            str(out),
            "--labels",
            str(files["moving_labels"]),
            "--write-field",
            "--fixed-labels",
            str(files["fixed_labels"]),
            *QUICK,
        ]
    )
    assert code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "transform.h5",
        "field.nii.gz",
        "warped.nii.gz",
        "warped_labels.nii.gz",
        "qc.png",
        "qc.html",
        "report.json",
    }
    transform = itk.transformread(str(out / "transform.h5"))[0]
    assert transform.GetNameOfClass() == "DisplacementFieldTransform"
    field = itk.imread(str(out / "field.nii.gz"))
    assert itk.template(field)[1][0] == itk.Vector[itk.F, 3]
    fixed = itk.imread(str(files["fixed"]))
    assert np.allclose(field.GetSpacing(), fixed.GetSpacing())
    labels = itk.array_from_image(itk.imread(str(out / "warped_labels.nii.gz")))
    assert set(np.unique(labels)) <= set(range(8))
    report = json.loads((out / "report.json").read_text())
    evaluation = report["evaluation"]
    mean = evaluation["labels"]["mean"]
    assert mean["dice_after"] > mean["dice_before_identity"] + 0.015
    assert evaluation["jacobian"]["percent_nonpositive"] < 0.5
    assert {"sdlogj", "sdlogj_l2r", "min", "max"} <= set(evaluation["jacobian"])
    assert report["parameters"]["working_spacing_mm"] == 6.0
    assert report["parameters"]["io_iterations"] == 10
    timings = report["timings_s"]
    assert {
        "startup",
        "arguments",
        "imports",
        "reading",
        "prealignment",
        "registration",
        "scoring",
        "writing",
        "qc",
        "total",
    } <= set(timings)
    assert (
        timings["total"]
        >= sum(v for k, v in timings.items() if k not in ("total", "registration_stages")) - 0.01
    )
    assert report["versions"]["torch"] == torch.__version__
    with open(out / "qc.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_register_accepts_int16_ct_files(files, tmp_path):
    """CT is usually stored as int16: reading, registering and warping must all accept it."""
    folder = tmp_path / "int16"
    folder.mkdir()
    paths = []
    for name in ("fixed", "moving"):
        image = itk.imread(str(files[name]))
        cast = itk.cast_image_filter(image, ttype=(type(image), itk.Image[itk.SS, 3]))
        itk.imwrite(cast, str(folder / f"{name}.nii.gz"))
        paths.append(str(folder / f"{name}.nii.gz"))
    out = tmp_path / "out"
    assert main(["register", *paths, "-o", str(out), "--no-qc", *QUICK]) == 0
    warped = itk.imread(str(out / "warped.nii.gz"))
    assert itk.template(warped)[1][0] == itk.SS
    assert (out / "report.json").stat().st_mode & 0o044  # readable beyond the owner


def test_existing_outputs_need_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "register",
        str(files["fixed"]),
        str(files["moving"]),
        "-o",
        str(out),
        "--no-qc",
        *QUICK,
    ]
    assert main(args) == 0
    before = (out / "transform.h5").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    assert "exist; pass --overwrite" in capsys.readouterr().err
    assert (out / "transform.h5").stat().st_mtime_ns == before  # nothing was touched
    assert main([*args, "--overwrite"]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_initial_transform_file_is_baked_in(files, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(files["fixed"]),
            str(files["moving"]),
            "-o",
            str(out),
            "--initial-transform",
            str(files["initial"]),
            "--no-qc",
            *QUICK,
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert "jacobian_deformable" in report["evaluation"]
    assert report["prealignment"] == {"method": "file", "path": str(files["initial"])}
    assert report["evaluation"]["states"] == ["before_identity", "before_initial", "after"]


def test_config_prints_loadable_toml_and_config_files_are_used(files, tmp_path, capsys):
    assert main(["config", "--preset", "paper"]) == 0
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert data["coupling_units"] == "normalized" and len(data["levels"]) == 3
    path = tmp_path / "cfg.toml"
    path.write_text(text.replace("io_iterations = 50", "io_iterations = 7"))
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(files["fixed"]),
            str(files["moving"]),
            "-o",
            str(out),
            "--config",
            str(path),
            "--no-qc",
            "--set",
            "working_spacing_mm=6.0",
            "-q",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["io_iterations"] == 7
    assert report["parameters"]["coupling_units"] == "normalized"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "bogus=1"], "unknown registration parameter 'bogus'"),
        (["--set", "io_iteration=1"], "'io_iteration' (did you mean 'io_iterations'?)"),
        (["--set", "io_iterations"], "must look like NAME=VALUE"),
        (["--set", "working_spacing_mm=-1"], "Parameter 'working_spacing_mm' is -1"),
    ],
)
def test_bad_parameters_exit_2_with_the_reason(files, tmp_path, capsys, extra, message):
    code = main(
        ["register", str(files["fixed"]), str(files["moving"]), "-o", str(tmp_path / "out"), *extra]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_input_exits_2(tmp_path, capsys):
    code = main(
        [
            "register",
            str(tmp_path / "nope.nii.gz"),
            str(tmp_path / "nope.nii.gz"),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "fixed image" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_exits_2(files, tmp_path, capsys):
    code = main(
        [
            "register",
            str(files["fixed"]),
            str(files["moving"]),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cuda",
            *QUICK,
        ]
    )
    assert code == 2
    assert "sees no CUDA device" in capsys.readouterr().err


def test_demo_reports_the_error_against_the_truth(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        ["demo", "-o", str(out), "--set", "working_spacing_mm=5.0", "--set", "io_iterations=20"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "end-point error in the body: mean" in printed
    report = json.loads((out / "report.json").read_text())
    truth = report["truth"]
    assert truth["max_displacement_mm"] == pytest.approx(12.0, abs=0.2)
    assert truth["mean_error_mm"] < 0.5 * truth["mean_displacement_mm"]
    mean = report["evaluation"]["labels"]["mean"]
    assert mean["dice_after"] > mean["dice_before_identity"]
    # the phantom itself is written too, so the demo opens in a viewer
    assert (out / "fixed.nii.gz").is_file() and (out / "moving.nii.gz").is_file()
    names = {e["name"] for e in report["evaluation"]["labels"]["per_label"].values()}
    assert {"lungs", "liver"} <= names


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "itk-samconvex" in capsys.readouterr().out
    assert main([]) == 2
    assert "register" in capsys.readouterr().out


_FAULTS = """
import resource, sys
import numpy as np
from itk_samconvex.cli.common import prepare_one_shot_process
prepare_one_shot_process()
try:
    import distributed.protocol  # noqa: F401
    print("distributed imported")
except ImportError:
    pass
np.ones(1 << 24, dtype=np.float32).sum()  # 64 MB: first touch of the heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    np.ones(1 << 24, dtype=np.float32).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc's mallopt"
)
def test_one_shot_commands_reuse_freed_memory_and_skip_dask(tmp_path):
    """In a register/demo process, freed 64 MB buffers are reused (no new page faults);
    with SAMCONVEX_KEEP_FREED_MEMORY=0 each one is a fresh mapping: at least 32 faults
    each even with 2 MB huge pages (16k with 4 kB pages)."""

    def faults(setting: str) -> int:
        env = {**os.environ, "SAMCONVEX_KEEP_FREED_MEMORY": setting}
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        assert "distributed" not in out
        return int(out[-1])

    kept, fresh = faults("1"), faults("0")
    assert kept < 32, kept
    assert fresh >= 4 * 32, fresh
