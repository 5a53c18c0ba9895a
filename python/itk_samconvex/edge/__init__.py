"""Layer 2, the ITK edge: the only code that imports itk.

``space`` (the one ITK <-> tensor bridge: grids, checks, sampling, fields back to mm),
``transforms`` (fields as ITK transforms, warping), ``initial`` (pre-alignment intake),
``elastix`` and ``prealign`` (affine pre-alignment), ``checks`` (is it a CT?), ``mapping``
(a transform under evaluation), ``io`` (every file read and written), ``registration``
(one registration: ``register``), ``api`` (``samconvex_registration`` and
``SAMConvexRegistrationFilter`` over it), ``itk_classes`` (ITK
classes without the lazy loader's cost). Imports only the solver and ``errors`` below it.
"""
