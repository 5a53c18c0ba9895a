# C++ front end of itk-samconvex: finds ITK and libtorch and defines the interface target
# SAMConvex::Filter (the header-only itk::SAMConvexRegistrationFilter plus its dependencies).
#
# ITK: any ITK 5.2+ (Debian/Ubuntu: `apt-get install libinsighttoolkit5-dev`), found by
#   find_package(ITK); set ITK_DIR for another build.
# libtorch: the one inside the installed torch wheel (same version as `samconvex export`, which
#   the AOTInductor package needs), found through the Python interpreter of the environment
#   that has torch (SAMCONVEX_PYTHON, default: the first python3 on PATH / the active venv);
#   set Torch_DIR or CMAKE_PREFIX_PATH to use another libtorch of the same version.

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

if(NOT SAMCONVEX_PYTHON)
  set(Python3_FIND_VIRTUALENV FIRST)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_FOUND)
    set(SAMCONVEX_PYTHON "${Python3_EXECUTABLE}")
  endif()
endif()
set(SAMCONVEX_PYTHON "${SAMCONVEX_PYTHON}" CACHE FILEPATH
    "Python with torch and itk-samconvex (finds libtorch; runs the reference scripts of the tests)")

if(NOT Torch_DIR AND SAMCONVEX_PYTHON)
  execute_process(
    COMMAND "${SAMCONVEX_PYTHON}" -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _samconvex_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _samconvex_torch_result ERROR_QUIET)
  if(_samconvex_torch_result EQUAL 0 AND _samconvex_torch_prefix)
    list(APPEND CMAKE_PREFIX_PATH "${_samconvex_torch_prefix}")
  endif()
endif()
find_package(Torch)
if(NOT Torch_FOUND)
  message(FATAL_ERROR
    "SAMCONVEX_BUILD_CXX needs libtorch: install the torch wheel in the Python environment "
    "(pip install torch==2.13.0) and pass -DSAMCONVEX_PYTHON=/path/to/that/python, or set "
    "Torch_DIR to <libtorch>/share/cmake/Torch (same version as `samconvex export`).")
endif()

find_package(ITK REQUIRED COMPONENTS
  ITKCommon ITKDisplacementField ITKImageFilterBase ITKImageFunction ITKImageGrid
  ITKImageIntensity ITKSmoothing ITKTransform
  ITKIOImageBase ITKIOMeta ITKIONIFTI ITKIONRRD
  ITKIOTransformBase ITKIOTransformHDF5 ITKIOTransformInsightLegacy ITKIOTransformMatlab)
include(${ITK_USE_FILE})
if(ITK_VERSION VERSION_LESS 5.2)
  message(FATAL_ERROR "itk::SAMConvexRegistrationFilter needs ITK 5.2 or newer (found ${ITK_VERSION}).")
endif()
message(STATUS "SAMConvex C++: ITK ${ITK_VERSION}, libtorch ${Torch_VERSION}, Python ${SAMCONVEX_PYTHON}")

get_filename_component(_samconvex_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
add_library(SAMConvexFilter INTERFACE)
add_library(SAMConvex::Filter ALIAS SAMConvexFilter)
target_include_directories(SAMConvexFilter INTERFACE "${_samconvex_root}/include")
target_link_libraries(SAMConvexFilter INTERFACE ${ITK_LIBRARIES} ${TORCH_LIBRARIES})
target_compile_features(SAMConvexFilter INTERFACE cxx_std_17)
if(TORCH_CXX_FLAGS)
  separate_arguments(_samconvex_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(SAMConvexFilter INTERFACE ${_samconvex_torch_flags})
endif()
install(FILES "${_samconvex_root}/include/itkSAMConvexRegistrationFilter.h"
              "${_samconvex_root}/include/itkSAMConvexRegistrationFilter.hxx"
        DESTINATION include/SAMConvex)
