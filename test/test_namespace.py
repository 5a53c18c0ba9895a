"""The installed package joins the ``itk`` namespace (run after `pip install .` and `-e .`).

Each check runs in a fresh interpreter, because what is tested is what ``import itk`` does
on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.install


def _site_config() -> Path | None:
    import itk

    config = Path(itk.__file__).parent / "Configuration" / "SAMConvexConfig.py"
    return config if config.is_file() else None


requires_install = pytest.mark.skipif(
    _site_config() is None,
    reason="itk-samconvex is not installed into this environment's itk package "
    "(pip install . or pip install -e .)",
)


def run_python(
    code: str,
    env_extra: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or Path("/"),
        timeout=timeout,
    )


CHECK = """
    import sys
    import itk
    assert "itk_samconvex" not in sys.modules or not {lazy}, "imported too early"
    function = itk.samconvex_registration
    cls = itk.SAMConvexRegistrationFilter
    import itk_samconvex
    assert function is itk_samconvex.samconvex_registration, function
    assert cls is itk_samconvex.SAMConvexRegistrationFilter, cls
    image = itk.Image[itk.F, 3].New()  # the rest of itk still works
    print("OK", cls.__module__)
"""


@requires_install
def test_plain_import_itk_exposes_our_names_with_lazy_loading():
    result = run_python(CHECK.format(lazy=True), {"ITK_PYTHON_LAZYLOADING": "1"})
    assert result.returncode == 0, result.stderr
    assert "OK itk_samconvex.edge.api" in result.stdout


@requires_install
def test_plain_import_itk_exposes_our_names_without_lazy_loading():
    result = run_python(CHECK.format(lazy=False), {"ITK_PYTHON_LAZYLOADING": "0"})
    assert result.returncode == 0, result.stderr
    assert "OK itk_samconvex.edge.api" in result.stdout


@requires_install
def test_force_load_keeps_working():
    result = run_python("""
        import itk
        itk.force_load()
        print(itk.samconvex_registration.__module__, itk.Image[itk.SS, 3].__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert "itk_samconvex.edge.api itkImageSS3" in result.stdout


BROKEN = """
    import sys
    sys.modules["itk_samconvex"] = None  # any import of our package now fails
    import itk
    image = itk.Image[itk.F, 3].New()
    {force}
    try:
        itk.samconvex_registration(image, image)
    except ImportError as error:
        print("ImportError:", error)
"""


@requires_install
@pytest.mark.parametrize(
    ("lazy", "force"),
    [("1", ""), ("0", ""), ("1", "itk.force_load()")],
    ids=["lazy", "eager", "force_load"],
)
def test_a_broken_package_never_breaks_import_itk(lazy, force):
    result = run_python(BROKEN.format(force=force), {"ITK_PYTHON_LAZYLOADING": lazy})
    assert result.returncode == 0, result.stderr
    assert "ImportError: itk-samconvex is installed but could not be imported" in result.stdout
    assert "pip install --force-reinstall itk-samconvex" in result.stdout


def test_importing_the_package_registers_the_names_without_the_shim():
    """The fallback for checkouts without the itk/Configuration files."""
    result = run_python(
        """
        import itk
        import itk_samconvex
        assert itk.samconvex_registration is itk_samconvex.samconvex_registration
        print("OK")
    """,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
