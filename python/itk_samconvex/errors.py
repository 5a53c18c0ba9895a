"""Exception types: every message names the input, the problem and the fix."""

from __future__ import annotations


class SAMConvexError(Exception):
    """Base class of the errors itk-samconvex raises on purpose."""


class InputError(SAMConvexError, ValueError):
    """An input image, mask, transform or parameter cannot be used as given."""


class ResourceError(SAMConvexError, RuntimeError):
    """The requested device or the memory needed is not available."""


class OutputError(SAMConvexError, OSError):
    """An output cannot be written where asked (folder not creatable, or it is an input)."""
