"""Layer 1, the solver: pure torch on working-grid tensors; never imports itk.

``config`` (every parameter), ``features`` (MIND-SSC, SAM), ``cost`` (local cost volumes),
``convex`` (coupled convex optimisation), ``instance`` (Adam instance optimisation),
``warp`` (sampling, composition, smoothing), ``pyramid`` (the coarse-to-fine driver) and
``device`` (device, memory, threads). Fields are in working-grid voxels; mm only in ``edge``.
"""
