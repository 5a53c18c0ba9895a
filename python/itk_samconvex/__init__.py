"""itk-samconvex: SAMConvex CT deformable registration for ITK.

After ``pip install itk-samconvex`` a plain ``import itk`` exposes
``itk.samconvex_registration`` and ``itk.SAMConvexRegistrationFilter``; importing this
package directly gives the same objects plus the helpers below.

Layout (``docs/architecture.md``): ``solver`` (pure torch, never imports itk), ``edge`` (the
only code importing itk: geometry, IO, transforms, pre-alignment, the public API) and the
applications (``apps``, ``cli``). Imports go downwards only. The names here are loaded on
first use, so ``import itk_samconvex`` (and ``samconvex --help``) imports neither itk nor
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InputError, OutputError, ResourceError, SAMConvexError
from .version import __version__

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "LevelConfig": ".solver.config",
    "SAMConvexConfig": ".solver.config",
    "preset_config": ".solver.config",
    "RegistrationResult": ".edge.registration",
    "SAMConvexRegistrationFilter": ".edge.api",
    "register": ".edge.registration",
    "samconvex_registration": ".edge.api",
    "warp_image": ".edge.transforms",
    "elastix_affine": ".edge.elastix",
    "elastix_prealignment": ".edge.elastix",
    "search_translation": ".edge.prealign",
    "evaluate": ".apps.evaluate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'itk_samconvex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    if name in ("samconvex_registration", "SAMConvexRegistrationFilter"):
        _register_itk_names()
    return value


def _register_itk_names() -> None:
    """Fallback when the itk/Configuration files are absent (e.g. a source checkout):
    attach our names to the ``itk`` module. Harmless when they are already there."""
    import sys

    itk = sys.modules.get("itk")
    if itk is None:
        return
    from .edge.api import SAMConvexRegistrationFilter, samconvex_registration

    for name, obj in (
        ("samconvex_registration", samconvex_registration),
        ("SAMConvexRegistrationFilter", SAMConvexRegistrationFilter),
    ):
        try:
            current = itk.__dict__.get(name)
            if current is None or current is not obj:
                setattr(itk, name, obj)
        except Exception:  # pragma: no cover - never break the user's itk
            pass


def _fallback_without_itk_files() -> None:
    """A source checkout on PYTHONPATH lacks the itk/Configuration files that make ``import
    itk`` expose our names: attach them when this package is imported after itk. (With the
    files installed this does nothing, so ``import itk_samconvex`` stays light.)"""
    import sys
    from pathlib import Path

    itk = sys.modules.get("itk")
    if itk is None or not getattr(itk, "__file__", None):
        return
    if (Path(itk.__file__).parent / "Configuration" / "SAMConvexConfig.py").is_file():
        return
    _register_itk_names()


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["InputError", "OutputError", "ResourceError", "SAMConvexError", "__version__", *_LAZY]

_fallback_without_itk_files()
