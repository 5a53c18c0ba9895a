"""itk-samconvex: SAMConvex CT deformable registration for ITK.

After ``pip install itk-samconvex`` a plain ``import itk`` exposes
``itk.samconvex_registration`` and ``itk.SAMConvexRegistrationFilter``; importing this
package directly gives the same objects plus the helpers below.
"""

from __future__ import annotations

from .solver.config import LevelConfig, SAMConvexConfig, preset_config
from .errors import InputError, ResourceError, SAMConvexError
from .edge.registration import (
    RegistrationResult,
    SAMConvexRegistrationFilter,
    register,
    samconvex_registration,
    warp_image,
)

__version__ = "0.1.0"


def elastix_affine(fixed, moving, **kwargs):
    """Affine pre-alignment with itk-elastix; see :func:`itk_samconvex.elastix.elastix_affine`."""
    from .edge.elastix import elastix_affine as run

    return run(fixed, moving, **kwargs)


def _register_itk_names() -> None:
    """Fallback when the itk/Configuration files are absent (e.g. a source checkout):
    attach our names to the ``itk`` module. Harmless when they are already there."""
    import sys

    itk = sys.modules.get("itk")
    if itk is None:
        return
    for name, obj in (("samconvex_registration", samconvex_registration),
                      ("SAMConvexRegistrationFilter", SAMConvexRegistrationFilter)):
        try:
            current = itk.__dict__.get(name)
            if current is None or current is not obj:
                setattr(itk, name, obj)
        except Exception:  # pragma: no cover - never break the user's itk
            pass


_register_itk_names()

__all__ = [
    "InputError",
    "LevelConfig",
    "RegistrationResult",
    "ResourceError",
    "SAMConvexConfig",
    "SAMConvexError",
    "SAMConvexRegistrationFilter",
    "__version__",
    "elastix_affine",
    "preset_config",
    "register",
    "samconvex_registration",
    "warp_image",
]
