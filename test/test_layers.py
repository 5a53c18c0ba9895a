"""The import structure: the real package passes check_layers; planted violations fail it."""

from __future__ import annotations

import shutil
from pathlib import Path

import check_layers

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "python" / "itk_samconvex"


def test_package_has_no_circle_and_imports_go_down():
    assert check_layers.check(PACKAGE_DIR) == []


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "itk_samconvex"
    shutil.copytree(PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    return root


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_itk_in_the_solver_is_caught(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "solver" / "cost.py", "import itk")
    problems = check_layers.check(root)
    assert len(problems) == 1
    assert "itk_samconvex.solver.cost (solver) imports itk" in problems[0]


def test_upward_import_and_cli_import_are_caught(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "edge" / "space.py", "from ..apps import qc")
    _plant(root / "apps" / "qc.py", "from ..cli import common")
    problems = check_layers.check(root)
    assert any(
        "itk_samconvex.edge.space (edge) imports itk_samconvex.apps.qc (apps)" in p
        for p in problems
    )
    assert any("itk_samconvex.apps.qc imports the CLI" in p for p in problems)


def test_import_circle_is_caught(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "solver" / "warp.py", "def f():\n    from .pyramid import register_tensors")
    problems = check_layers.check(root)
    circles = [p for p in problems if p.startswith("import circle")]
    assert len(circles) == 1
    assert "itk_samconvex.solver.pyramid" in circles[0]
    assert "itk_samconvex.solver.warp" in circles[0]


def test_facade_import_is_caught(tmp_path):
    root = _copy(tmp_path)
    _plant(root / "apps" / "phantom.py", "import itk_samconvex")
    problems = check_layers.check(root)
    assert any("imports the package facade" in p for p in problems)


def test_main_exit_codes(tmp_path, capsys):
    assert check_layers.main([str(PACKAGE_DIR)]) == 0
    root = _copy(tmp_path)
    _plant(root / "metrics.py", "import torch")
    assert check_layers.main([str(root)]) == 1
    assert "imports torch" in capsys.readouterr().out
