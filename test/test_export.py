"""``samconvex export``: export-friendly solver paths, package metadata, self-check, errors.

The AOTInductor compile itself takes minutes, so it runs in the C++ tests (ctest fixture
``samconvex_export_solver``, which also checks the compiled package on two shapes against
eager execution); here the compile is replaced by fakes where the logic around it is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from itk_samconvex.apps import export as ex
from itk_samconvex.cli import main
from itk_samconvex.errors import InputError
from itk_samconvex.solver.config import LevelConfig, preset_config
from itk_samconvex.solver.convex import coupled_convex
from itk_samconvex.solver.cost import cost_volume
from itk_samconvex.solver.features import make_extractor, mind_ssc
from itk_samconvex.solver.instance import instance_optimization
from itk_samconvex.solver.pyramid import register_tensors
from itk_samconvex.solver.warp import export_friendly, export_friendly_paths


def smooth_volume(shape, seed=0, channels=1):
    """Smooth random (1, C, Z, Y, X) texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, *[n // 4 + 2 for n in shape], generator=g)
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)


def weights(shape):
    """Data-term weights (1, 1, Z, Y, X) with a few excluded border planes."""
    fw = torch.ones(1, 1, *shape)
    fw[:, :, :2] = 0
    mw = torch.ones(1, 1, *shape)
    mw[:, :, :, :, -3:] = 0
    return fw, mw


# ------------------------------------------------------------------ export-friendly paths


def test_export_friendly_switch_is_scoped():
    assert not export_friendly()
    with export_friendly_paths():
        assert export_friendly()
        with export_friendly_paths(False):
            assert not export_friendly()
        assert export_friendly()
    assert not export_friendly()


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cost_volume_windows_equal_chunked(radius, weighted):
    shape = (10, 12, 14)
    fixed, moving = smooth_volume(shape, 1, 6), smooth_volume(shape, 2, 6)
    fw, mw = weights(shape) if weighted else (None, None)
    eager = cost_volume(fixed, moving, radius, fw, mw, chunk_elements=1 << 12)
    with export_friendly_paths():
        friendly = cost_volume(fixed, moving, radius, fw, mw)
    assert friendly.shape == eager.shape == (*shape, (2 * radius + 1) ** 3)
    assert float((friendly - eager).abs().max()) < 1e-5 * float(eager.abs().max())


def test_coupled_convex_one_chunk_equals_chunked():
    shape, radius = (8, 10, 12), 2
    cost = cost_volume(smooth_volume(shape, 3, 4), smooth_volume(shape, 4, 4), radius)
    args = (cost, radius, (0.01, 0.1, 1.0), "voxel", 1.0, 1, 1, "replicate")
    eager = coupled_convex(*args, chunk_voxels=97)  # many chunks, one ragged
    with export_friendly_paths():
        friendly = coupled_convex(*args, chunk_voxels=97)
    assert torch.equal(friendly, eager)


def test_mind_and_instance_optimization_export_forms_match():
    shape = (12, 12, 16)
    image = 300.0 * smooth_volume(shape, 5)
    eager_mind = mind_ssc(image)
    with export_friendly_paths():
        friendly_mind = mind_ssc(image)
    assert float((friendly_mind - eager_mind).abs().max()) < 1e-5

    fixed, moving = smooth_volume(shape, 6, 12), smooth_volume(shape, 7, 12)
    init = 0.5 * smooth_volume(shape, 8, 3)
    fw, mw = weights(shape)
    kwargs = {"iterations": 7, "relinearize_every": 3, "fixed_weight": fw, "moving_weight": mw}
    eager = instance_optimization(fixed, moving, init, **kwargs)
    with export_friendly_paths():
        friendly = instance_optimization(fixed, moving, init, **kwargs)
    assert float((friendly - eager).abs().max()) < 1e-4  # voxels


@pytest.mark.parametrize("preset", ["fast", "default"])
def test_whole_solver_export_form_matches_eager(preset):
    cfg = preset_config(preset, io_iterations=10)
    fixed, moving, fw, mw = ex.example_inputs((40, 48, 40), seed=3)
    extractor = make_extractor(cfg)
    with torch.no_grad():
        eager = register_tensors(fixed, moving, cfg, extractor, fw, mw).field
        with export_friendly_paths():
            friendly = register_tensors(fixed, moving, cfg, extractor, fw, mw).field
    assert eager.shape == (1, 3, 20, 24, 20)
    assert float(eager.abs().max()) > 0.3  # the example pair moves
    assert float((friendly - eager).abs().max()) < ex.DEFAULT_TOLERANCE_VOXELS


def test_unit_weights_equal_no_weights():
    """The package always gets weights; ones must give the Python path's ``None`` result."""
    cfg = preset_config("fast", io_iterations=5)
    fixed, moving, _, _ = ex.example_inputs((40, 40, 48), seed=4, masked=False)
    ones = torch.ones_like(fixed)
    extractor = make_extractor(cfg)
    with torch.no_grad():
        none = register_tensors(fixed, moving, cfg, extractor).field
        unit = register_tensors(fixed, moving, cfg, extractor, ones, ones).field
    assert float((none - unit).abs().max()) < 1e-4


# ------------------------------------------------------------------ limits, metadata


def test_shape_limits_of_the_presets():
    assert ex.shape_limits(preset_config("fast")) == ex.ShapeLimits(8, 40, 1024)
    assert ex.shape_limits(preset_config("default")) == ex.ShapeLimits(8, 40, 1024)
    assert ex.shape_limits(preset_config("paper")) == ex.ShapeLimits(8, 40, 1024)
    # one level of radius 1 on an 8-voxel grid: 3 level voxels = 24 working voxels
    tiny = preset_config("fast", levels=(LevelConfig(8, 1),), io_grid_factor=2)
    assert ex.shape_limits(tiny, max_size=100) == ex.ShapeLimits(8, 24, 96)


def test_shape_limits_check_messages():
    limits = ex.ShapeLimits(8, 40, 96)
    limits.check((40, 48, 96))
    with pytest.raises(
        InputError,
        match="has 44 voxels along y; the exported solver needs a "
        r"multiple of 8 in \[40, 96\]",
    ):
        limits.check((40, 44, 48))
    with pytest.raises(InputError, match="has 32 voxels along z"):
        limits.check((32, 48, 48), "working grid")
    with pytest.raises(InputError, match="has 104 voxels along x"):
        limits.check((40, 48, 104))


def test_package_metadata():
    cfg = preset_config(
        "fast", working_spacing_mm=2.5, max_working_voxels=None, crop_to_foreground=False
    )
    limits = ex.shape_limits(cfg)
    meta = ex.package_metadata(cfg, "cpu", limits)
    assert meta["samconvex.format"] == "1"
    assert meta["samconvex.inputs"] == "fixed,moving,fixed_weight,moving_weight"
    assert (meta["samconvex.multiple"], meta["samconvex.min_size"], meta["samconvex.max_size"]) == (
        "8",
        "40",
        "1024",
    )
    assert meta["samconvex.output_factor"] == "2"
    assert meta["samconvex.device"] == "cpu"
    assert meta["samconvex.torch"] == torch.__version__
    assert json.loads(meta["samconvex.config"]) == cfg.to_dict()
    # the working-grid parameters, as the C++ filter parses them (std::stod)
    assert float(meta["samconvex.grid.working_spacing_mm"]) == 2.5
    assert float(meta["samconvex.grid.max_working_voxels"]) == 0.0  # no limit
    assert float(meta["samconvex.grid.crop_to_foreground"]) == 0.0
    assert float(meta["samconvex.grid.antialias"]) == 1.0
    assert float(meta["samconvex.grid.foreground_threshold_hu"]) == -500.0
    assert float(meta["samconvex.grid.crop_margin_mm"]) == 16.0
    assert all(isinstance(v, str) for v in meta.values())


def test_compiler_options_are_recorded_and_fingerprinted():
    cfg = preset_config("fast")
    limits = ex.shape_limits(cfg)
    meta = ex.package_metadata(cfg, "cpu", limits, {"cpp.simdlen": 1})
    assert json.loads(meta["samconvex.compiler_options"]) == {"cpp.simdlen": 1}
    assert json.loads(ex.package_metadata(cfg, "cpu", limits)["samconvex.compiler_options"]) == {}
    assert meta["samconvex.fingerprint"] != ex.fingerprint(cfg, "cpu", limits)
    assert meta["samconvex.fingerprint"] == ex.fingerprint(cfg, "cpu", limits, {"cpp.simdlen": 1})


def test_fingerprint_tracks_parameters_device_and_sizes():
    cfg = preset_config("fast")
    limits = ex.shape_limits(cfg)
    base = ex.fingerprint(cfg, "cpu", limits)
    assert len(base) == 32 and base == ex.fingerprint(preset_config("fast"), "cpu", limits)
    assert base != ex.fingerprint(preset_config("fast", io_iterations=21), "cpu", limits)
    assert base != ex.fingerprint(cfg, "cuda:0", limits)
    assert base != ex.fingerprint(cfg, "cpu", ex.shape_limits(cfg, max_size=512))


def test_is_current_false_for_missing_or_foreign_file(tmp_path):
    cfg = preset_config("fast")
    assert not ex.is_current(tmp_path / "none.pt2", cfg)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a package")
    assert not ex.is_current(junk, cfg)


# ------------------------------------------------------------------ errors


def test_sam_features_cannot_be_exported():
    with pytest.raises(
        InputError,
        match=r"features='sam' cannot be exported yet.*export with "
        r"features='mind'",
    ):
        ex.check_exportable(preset_config("fast", features="sam"))


def test_export_package_argument_errors(tmp_path):
    cfg = preset_config("fast")
    with pytest.raises(InputError, match=r"solver\.onnx must end in \.pt2"):
        ex.export_package(tmp_path / "solver.onnx", cfg)
    existing = tmp_path / "solver.pt2"
    existing.write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=True \(CLI: --overwrite\)"):
        ex.export_package(existing, cfg)
    with pytest.raises(InputError, match=r"the folder of .* does not exist; create it first"):
        ex.export_package(tmp_path / "missing" / "solver.pt2", cfg)
    with pytest.raises(InputError, match="cannot be exported yet"):
        ex.export_package(tmp_path / "sam.pt2", preset_config("fast", features="sam"))
    with pytest.raises(InputError, match=r"'aot_inductor\.metadata' is reserved"):
        ex.export_package(tmp_path / "s.pt2", cfg, compiler_options={"aot_inductor.metadata": {}})


def test_cli_export_errors_exit_2(tmp_path, capsys):
    code = main(["export", "--out", str(tmp_path / "solver.zip"), "--preset", "fast", "-q"])
    assert code == 2
    assert "must end in .pt2" in capsys.readouterr().err
    code = main(["export", "--out", str(tmp_path / "s.pt2"), "--features", "sam", "-q"])
    assert code == 2
    assert "cannot be exported yet" in capsys.readouterr().err
    code = main(["export", "--out", str(tmp_path / "s.pt2"), "--compiler-option", "simdlen", "-q"])
    assert code == 2
    assert "--compiler-option 'simdlen' must look like KEY=VALUE" in capsys.readouterr().err


# ------------------------------------------------------------------ the self-check (fake compile)


TINY = {"levels": (LevelConfig(8, 1),), "io_iterations": 3}


class FakeCompiler:
    """Stands in for AOTInductor: 'compiles' to a file, 'loads' an eager runner plus ``bias``."""

    def __init__(self, cfg, bias=0.0):
        self.cfg, self.bias, self.metadata = cfg, bias, None

    def compile(self, program, package_path, inductor_configs):
        self.metadata = inductor_configs["aot_inductor.metadata"]
        Path(package_path).write_bytes(b"fake package")
        return package_path

    def load(self, path):
        def run(*inputs):
            return [ex.eager_field(self.cfg, inputs) + self.bias]

        return run


@pytest.fixture(scope="module")
def tiny_program():
    """``torch.export`` of a one-level solver with 3 IO steps (sizes 8 * [3, 16])."""
    cfg = preset_config("fast", **TINY)
    return ex.export_program(cfg, limits=ex.shape_limits(cfg, max_size=128))


@pytest.fixture
def fake_compile(monkeypatch, tiny_program):
    """Replace torch.export (by the cached program) and AOTInductor (by FakeCompiler)."""

    def install(cfg, bias=0.0):
        fake = FakeCompiler(cfg, bias)
        monkeypatch.setattr(ex, "export_program", lambda *args, **kwargs: tiny_program)
        monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fake.compile)
        monkeypatch.setattr(torch._inductor, "aoti_load_package", fake.load)
        return fake

    return install


@pytest.mark.slow
def test_export_package_writes_after_a_passing_check(tmp_path, fake_compile):
    cfg = preset_config("fast", **TINY)
    fake = fake_compile(cfg)
    path = tmp_path / "solver.pt2"
    messages = []
    report = ex.export_package(
        path, cfg, check_shapes=[(24, 32, 40), (40, 24, 32)], progress=messages.append
    )
    assert path.read_bytes() == b"fake package"
    assert fake.metadata == report.metadata
    assert report.metadata["samconvex.min_size"] == "24"
    assert [row["shape"] for row in report.checks] == [[24, 32, 40], [40, 24, 32]]
    assert all(row["max_abs_diff"] == 0.0 for row in report.checks)
    assert all(row["max_abs_field"] > 0.1 for row in report.checks)
    assert messages == [
        "exporting the solver with torch.export",
        "compiling with AOTInductor (minutes)",
        "checking the compiled solver against eager execution on two shapes",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["solver.pt2"]  # no temp file left


@pytest.mark.slow
def test_export_package_refuses_a_package_that_differs_from_eager(tmp_path, fake_compile):
    cfg = preset_config("fast", **TINY)
    fake_compile(cfg, bias=0.05)
    path = tmp_path / "solver.pt2"
    with pytest.raises(
        RuntimeError,
        match=r"differs from eager execution by 0\.05 voxels "
        r"\(tolerance 0\.01\).*the package is not written",
    ):
        ex.export_package(path, cfg, check_shapes=[(24, 32, 40)])
    assert list(tmp_path.iterdir()) == []


def test_export_check_rejects_shapes_the_package_cannot_take(tmp_path, monkeypatch):
    cfg = preset_config("fast", **TINY)

    def no_export(*args, **kwargs):
        raise AssertionError("shapes must be checked before the export")

    monkeypatch.setattr(ex, "export_program", no_export)
    with pytest.raises(InputError, match=r"check shape \(20, 32, 40\) has 20 voxels along z"):
        ex.export_package(tmp_path / "solver.pt2", cfg, check_shapes=[(20, 32, 40)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_exported_program_is_dynamic_and_matches_eager(tiny_program):
    """torch.export keeps the full size range and runs other shapes like eager."""
    cfg = preset_config("fast", **TINY)
    program = tiny_program
    ranges = [
        (int(b.lower), int(b.upper))
        for s, b in program.range_constraints.items()
        if getattr(s, "is_Symbol", False)
    ]
    assert sorted(ranges) == [(3, 16)] * 3
    rows = ex.compare_with_eager(program.module(), cfg, [(32, 24, 48), (48, 40, 24)])
    assert [row["shape"] for row in rows] == [[32, 24, 48], [48, 40, 24]]
    assert max(row["max_abs_diff"] for row in rows) < ex.DEFAULT_TOLERANCE_VOXELS
