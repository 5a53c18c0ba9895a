"""Initial transforms: whatever a user passes as a pre-alignment, as one ITK transform.

Accepted: any ITK transform object (double precision, 3-D), an
``itk.ElastixRegistrationMethod`` that has run, an elastix ``ParameterObject``, or a path to
an ITK transform file (.h5, .tfm, .txt, .mat) or an elastix ``TransformParameters.*.txt``.
Every one maps **fixed physical points to moving physical points** (LPS mm).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError
from .io.transforms import read_transform


def as_transform(initial: Any, fixed: Any = None) -> Any:
    """Turn anything a user may pass as an initial transform into an ITK transform.

    ``fixed`` (the fixed image) is needed only for elastix transforms without a closed
    form (e.g. B-splines), which are densified on its grid with transformix. None stays None.
    """
    if initial is None:
        return None
    if isinstance(initial, str | os.PathLike):
        return read_transform(initial, fixed, "initial transform file")
    name = type(initial).__name__
    if "ElastixRegistrationMethod" in name:
        from .elastix import from_registration_method

        return from_registration_method(initial)
    if "ParameterObject" in name:
        from .elastix import from_parameter_object

        return from_parameter_object(initial, fixed)
    if hasattr(initial, "TransformPoint") and hasattr(initial, "GetNumberOfParameters"):
        return checked_transform(initial, "initial_transform")
    raise TypeError(
        f"initial_transform must be an itk.Transform, an itk-elastix registration/parameter "
        f"object or a transform file path; got {name}."
    )


def checked_transform(transform: Any, what: str) -> Any:
    """A 3-D double-precision transform (what ITK's resampler and the baking accept)."""
    dims = (int(transform.GetInputSpaceDimension()), int(transform.GetOutputSpaceDimension()))
    if dims != (3, 3):
        raise InputError(
            f"{what} maps {dims[0]}-D to {dims[1]}-D points ({transform.GetNameOfClass()}); "
            "pass a 3-D transform."
        )
    probe = transform.TransformPoint([0.0, 0.0, 0.0])
    if "itkPointF" in type(probe).__name__:
        raise InputError(
            f"{what} is a single-precision transform ({transform.GetNameOfClass()}); build it "
            "as itk.<Type>[itk.D, 3] (ITK's resampler needs double precision)."
        )
    return transform


__all__ = ["as_transform", "checked_transform"]
