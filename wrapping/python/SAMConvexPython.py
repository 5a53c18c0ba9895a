"""itk.SAMConvexPython: the module itk's lazy loader imports for our names.

It only re-exports itk_samconvex. A failure here must never break `import itk` for
everybody else, so import errors are caught and replaced by stand-ins that raise a clear
ImportError when used.
"""

swig = {}  # itk's loader writes module.swig[...]; pure-Python modules keep it empty.

try:
    from itk_samconvex.edge.api import (
        SAMConvexRegistrationFilter,
        samconvex_registration,
    )
except Exception as _error:  # pragma: no cover - exercised by test_namespace
    _message = (
        "itk-samconvex is installed but could not be imported "
        f"({type(_error).__name__}: {_error}). Reinstall it with "
        "`pip install --force-reinstall itk-samconvex` and check that torch imports."
    )

    def samconvex_registration(*args, **kwargs):
        raise ImportError(_message)

    class SAMConvexRegistrationFilter:
        def __init__(self, *args, **kwargs):
            raise ImportError(_message)

        @classmethod
        def New(cls, *args, **kwargs):
            raise ImportError(_message)


def samconvex_registration_init_docstring():
    """Required by itk's lazy loader for every snake_case function (nothing to do)."""
