# libtorch for the SAMConvex ITK module, in every build mode (stand-alone through
# cmake/SAMConvexCxx.cmake or ITKModuleExternal, or inside ITK's Modules/Remote), plus the
# defaults header check. Included by the top-level CMakeLists.txt and cmake/SAMConvexCxx.cmake.
#
# libtorch: the one inside the installed torch wheel (same version as `samconvex export`, which
#   the AOTInductor package needs), found through the Python interpreter of the environment
#   that has torch (SAMCONVEX_PYTHON, default: the first python3 on PATH / the active venv);
#   set Torch_DIR or CMAKE_PREFIX_PATH to use another libtorch of the same version.
#
# Sets TORCH_LIBRARIES, TORCH_INCLUDE_DIRS, TORCH_CXX_FLAGS (find_package(Torch)) and, for the
# ITK module machinery, SAMConvex_SYSTEM_INCLUDE_DIRS and SAMConvex_EXPORT_CODE_BUILD/INSTALL
# (code appended to the generated Modules/SAMConvex.cmake: it finds libtorch again and adds it
# to SAMConvex_LIBRARIES, so `find_package(ITK COMPONENTS SAMConvex)` users link it too).
# Defines the function samconvex_filter_target(<ITK libraries...>): the interface target
# SAMConvex::Filter (include/, those libraries, libtorch, C++17).

include_guard(GLOBAL)
get_filename_component(_samconvex_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(SAMCONVEX_SOURCE_ROOT "${_samconvex_root}" CACHE INTERNAL "itk-samconvex source folder")

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
    "The SAMConvex C++ filter needs libtorch: install the torch wheel in the Python environment "
    "(pip install torch==2.13.0) and pass -DSAMCONVEX_PYTHON=/path/to/that/python, or set "
    "Torch_DIR to <libtorch>/share/cmake/Torch (same version as `samconvex export`).")
endif()

# the ITK module machinery (itk_module_impl) reads these
set(SAMConvex_SYSTEM_INCLUDE_DIRS ${TORCH_INCLUDE_DIRS})
set(SAMConvex_EXPORT_CODE_BUILD "
# libtorch (itk-samconvex): the filter runs the exported solver with it
if(NOT TARGET torch)
  find_package(Torch REQUIRED HINTS \"${Torch_DIR}\")
endif()
list(APPEND SAMConvex_LIBRARIES \${TORCH_LIBRARIES})
")
set(SAMConvex_EXPORT_CODE_INSTALL "${SAMConvex_EXPORT_CODE_BUILD}")

# include/itkSAMConvexDefaults.h is generated from config.py and checked in (for builds
# without Python). With a Python >= 3.11 at hand, check it now against this checkout's
# sources: the check needs only the standard library and the solver layer (config.py,
# errors.py), so it runs with a bare stand-in for the package (no itk, no torch, no install).
# The build never writes into the source tree; a stale header is a warning here and a test
# failure (ctest samconvex_defaults_header, test/test_cxx_defaults.py).
set(_samconvex_defaults "${SAMCONVEX_SOURCE_ROOT}/include/itkSAMConvexDefaults.h")
set(_samconvex_package "${SAMCONVEX_SOURCE_ROOT}/python/itk_samconvex")
set(_samconvex_generator_python "${SAMCONVEX_PYTHON}")
if(NOT _samconvex_generator_python)
  find_package(Python3 3.11 COMPONENTS Interpreter QUIET)
  set(_samconvex_generator_python "${Python3_EXECUTABLE}")
endif()
if(_samconvex_generator_python AND EXISTS "${_samconvex_package}/apps/cxx_header.py")
  # usage: <python> -c "${SAMCONVEX_CXX_HEADER_CODE}" <package folder> [--check] <header>
  set(SAMCONVEX_CXX_HEADER_CODE "import runpy, sys, types; \
package = types.ModuleType('itk_samconvex'); package.__path__ = [sys.argv[1]]; \
sys.modules['itk_samconvex'] = package; sys.argv = ['cxx_header'] + sys.argv[2:]; \
runpy.run_module('itk_samconvex.apps.cxx_header', run_name='__main__')"
      CACHE INTERNAL "runs python/itk_samconvex/apps/cxx_header.py from the source tree")
  set(SAMCONVEX_CXX_HEADER_PYTHON "${_samconvex_generator_python}" CACHE INTERNAL "")
  execute_process(
    COMMAND "${_samconvex_generator_python}" -c "${SAMCONVEX_CXX_HEADER_CODE}"
            "${_samconvex_package}" --check "${_samconvex_defaults}"
    RESULT_VARIABLE _samconvex_defaults_result
    OUTPUT_VARIABLE _samconvex_defaults_output OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _samconvex_defaults_error ERROR_STRIP_TRAILING_WHITESPACE)
  if(NOT _samconvex_defaults_result EQUAL 0)
    message(WARNING "include/itkSAMConvexDefaults.h does not match config.py (or could not be "
                    "checked with ${_samconvex_generator_python}): ${_samconvex_defaults_error} "
                    "Regenerate it: python -m itk_samconvex.apps.cxx_header "
                    "include/itkSAMConvexDefaults.h")
  else()
    message(STATUS "SAMConvex: include/itkSAMConvexDefaults.h matches config.py")
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               "${_samconvex_package}/solver/config.py")
else()
  message(STATUS "SAMConvex: no Python 3.11+ or no python/ sources: using the checked-in "
                 "include/itkSAMConvexDefaults.h")
endif()

function(samconvex_filter_target)
  if(TARGET SAMConvexFilter)
    return()
  endif()
  add_library(SAMConvexFilter INTERFACE)
  add_library(SAMConvex::Filter ALIAS SAMConvexFilter)
  target_include_directories(SAMConvexFilter INTERFACE "${SAMCONVEX_SOURCE_ROOT}/include")
  target_link_libraries(SAMConvexFilter INTERFACE ${ARGN} ${TORCH_LIBRARIES})
  target_compile_features(SAMConvexFilter INTERFACE cxx_std_17)
  if(TORCH_CXX_FLAGS)
    separate_arguments(_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
    target_compile_options(SAMConvexFilter INTERFACE ${_flags})
  endif()
endfunction()
