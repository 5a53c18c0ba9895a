"""The input files of one pair: names only, no heavy imports (the CLI checks them before it
loads torch or ITK)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

#: ``initial_transform`` value asking for the search + itk-elastix affine pre-alignment.
ELASTIX_AFFINE = "elastix-affine"


_WHAT = {
    "fixed": "fixed image",
    "moving": "moving image",
    "fixed_labels": "fixed label map",
    "moving_labels": "moving label map",
    "fixed_mask": "fixed mask",
    "moving_mask": "moving mask",
    "initial_transform": "initial transform",
    "fixed_landmarks": "fixed landmarks",
    "moving_landmarks": "moving landmarks",
    "label_names": "label-name file",
}


@dataclass(frozen=True)
class PairFiles:
    """The input files of one pair (paths; None when not given).

    ``initial_transform`` is a transform file or :data:`ELASTIX_AFFINE`.
    """

    fixed: str
    moving: str
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_mask: str | None = None
    moving_mask: str | None = None
    initial_transform: str | None = None
    fixed_landmarks: str | None = None
    moving_landmarks: str | None = None
    label_names: str | None = None

    def named(self) -> Iterator[tuple[str, str | None]]:
        """``(what, path)`` of every input (what as messages name it)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "initial_transform" and value == ELASTIX_AFFINE:
                continue
            yield _WHAT[f.name], value

    def paths(self) -> list[str]:
        """Every input file given (what outputs must never be)."""
        return [path for _, path in self.named() if path]

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


__all__ = ["ELASTIX_AFFINE", "PairFiles"]
