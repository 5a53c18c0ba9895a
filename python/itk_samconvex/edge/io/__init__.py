"""All file input and output: one implementation of each thing.

* ``atomic``: atomic writes (temporary sibling + rename, stale-temporary cleanup, inputs never
  overwritten), JSON, output folders;
* ``images``: the image reader (header checks before allocation, NIfTI checks ITK skips,
  DICOM folders) and writer;
* ``transforms``: ITK and elastix transform files;
* ``landmarks``: landmark files (one convention: LPS mm, row ``i`` matches row ``i``);
* ``labels``: label-name tables.
"""

from .atomic import (
    TEMP_PREFIX,
    atomic_write,
    json_safe,
    make_output_folder,
    output_folder,
    refuse_inputs,
    remove_stale_temps,
    same_file,
    write_json,
    write_text,
)
from .images import (
    ImageInfo,
    as_itk_image,
    check_fits_memory,
    read_image,
    read_image_info,
    write_image,
)
from .labels import label_name, read_label_names
from .landmarks import landmark_points, read_landmarks
from .transforms import TRANSFORM_SUFFIXES, read_transform, write_transform

__all__ = [
    "TEMP_PREFIX",
    "TRANSFORM_SUFFIXES",
    "ImageInfo",
    "as_itk_image",
    "atomic_write",
    "check_fits_memory",
    "json_safe",
    "label_name",
    "landmark_points",
    "make_output_folder",
    "output_folder",
    "read_image",
    "read_image_info",
    "read_label_names",
    "read_landmarks",
    "read_transform",
    "refuse_inputs",
    "remove_stale_temps",
    "same_file",
    "write_image",
    "write_json",
    "write_text",
    "write_transform",
]
