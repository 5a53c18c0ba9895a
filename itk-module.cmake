# ITK remote-module descriptor of itk-samconvex: module SAMConvex, the header-only
# itk::SAMConvexRegistrationFilter (include/), which runs the solver exported by the Python
# package (`samconvex export`) with libtorch.
#
# Read by ITKModuleExternal (stand-alone build against an ITK build tree), by ITK's
# Modules/Remote machinery, and by cmake/SAMConvexCxx.cmake (stand-alone build against an ITK
# install tree such as Debian's, which ships no ITKModuleExternal.cmake): this is the one list
# of the ITK modules the filter, its tests and its example use. libtorch is not an ITK module:
# the CMakeLists add it (SAMConvex_EXPORT_CODE_*, see cmake/SAMConvexTorch.cmake).
set(DOCUMENTATION "SAMConvex CT deformable registration (anatomical embeddings, correlation \
pyramid, coupled convex discrete optimisation, instance optimisation) as an ITK filter: \
itk::SAMConvexRegistrationFilter runs the solver exported by the itk-samconvex Python package \
(AOTInductor, libtorch) and returns the displacement field in LPS mm.")

itk_module(SAMConvex
  DEPENDS
    ITKCommon            # Image, ImageSource, DataObjectDecorator, Vector, iterators, threads
    ITKDisplacementField # DisplacementFieldTransform (GetTransform)
    ITKImageFilterBase   # CastImageFilter
    ITKSmoothing         # SmoothingRecursiveGaussianImageFilter (antialiasing)
    ITKTransform         # Transform (initial transform input)
  TEST_DEPENDS
    ITKImageFunction     # LinearInterpolateImageFunction (example)
    ITKImageGrid         # ResampleImageFilter (example)
    ITKIOImageBase
    ITKIOMeta
    ITKIONIFTI
    ITKIONRRD
    ITKIOTransformBase
    ITKIOTransformHDF5
    ITKIOTransformInsightLegacy
    ITKIOTransformMatlab
  EXCLUDE_FROM_DEFAULT
  DESCRIPTION
    "${DOCUMENTATION}"
)
