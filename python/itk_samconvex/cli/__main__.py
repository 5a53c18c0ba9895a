"""``python -m itk_samconvex.cli``: the ``samconvex`` command."""

from . import console_main

console_main()
