"""Defaults of ``samconvex export``, importable without torch (the CLI's --help uses them)."""

#: largest working-grid size per axis an exported package accepts
DEFAULT_MAX_SIZE = 1024
#: largest accepted |compiled - eager| field difference (voxels of the output grid; at the
#: presets' 4 mm IO grid 0.01 voxel = 0.04 mm). Compiled kernels sum in another order than
#: eager ones, so the two agree to float round-off, which a discrete argmin can amplify only
#: at exact ties.
DEFAULT_TOLERANCE_VOXELS = 0.01
