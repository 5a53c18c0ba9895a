"""``python -m itk_samconvex.cli``: the ``samconvex`` command."""

import sys

from . import main

sys.exit(main())
