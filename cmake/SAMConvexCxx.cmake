# C++ front end of itk-samconvex for any CMake project: `include(<repo>/cmake/SAMConvexCxx.cmake)`
# finds ITK and libtorch and defines the interface target SAMConvex::Filter (the header-only
# itk::SAMConvexRegistrationFilter plus its dependencies); link your targets to it.
#
# It is also how this repository builds the ITK module SAMConvex stand-alone against an ITK
# install tree that has no ITKModuleExternal.cmake (Debian's libinsighttoolkit5-dev): the ITK
# components come from the module descriptor itk-module.cmake (DEPENDS and TEST_DEPENDS, so
# the image and transform IO of the tests and the example are there too).
#
# ITK: any ITK 5.2+ (Debian/Ubuntu: `apt-get install libinsighttoolkit5-dev`), found by
#   find_package(ITK); set ITK_DIR for another build.
# libtorch: see cmake/SAMConvexTorch.cmake (SAMCONVEX_PYTHON, Torch_DIR).
# Needs the C and C++ languages enabled (Debian's ITK config try-compiles C for FindHDF5).

include_guard(GLOBAL)
include("${CMAKE_CURRENT_LIST_DIR}/SAMConvexTorch.cmake")

# Read the descriptor. Without ITK's module macros, a stand-in itk_module() records the same
# variables ITK's does (ITK_MODULE_SAMConvex_DEPENDS, ITK_MODULE_SAMConvex-Test_DEPENDS).
if(NOT COMMAND itk_module)
  macro(itk_module _name)
    set(_samconvex_doing "")
    set(ITK_MODULE_${_name}_DEPENDS "")
    set(ITK_MODULE_${_name}-Test_DEPENDS "${_name}")
    foreach(_samconvex_arg ${ARGN})
      if(_samconvex_arg MATCHES "^((|COMPILE_|PRIVATE_|TEST_)DEPENDS|DESCRIPTION)$")
        set(_samconvex_doing "${_samconvex_arg}")
      elseif(_samconvex_arg MATCHES "^(EXCLUDE_FROM_DEFAULT|ENABLE_SHARED)$")
        set(_samconvex_doing "")
      elseif(_samconvex_doing STREQUAL "TEST_DEPENDS")
        list(APPEND ITK_MODULE_${_name}-Test_DEPENDS "${_samconvex_arg}")
      elseif(_samconvex_doing MATCHES "DEPENDS$")
        list(APPEND ITK_MODULE_${_name}_DEPENDS "${_samconvex_arg}")
      elseif(_samconvex_doing STREQUAL "DESCRIPTION")
        set(ITK_MODULE_${_name}_DESCRIPTION "${_samconvex_arg}")
        set(_samconvex_doing "")
      endif()
    endforeach()
  endmacro()
endif()
include("${SAMCONVEX_SOURCE_ROOT}/itk-module.cmake")
set(SAMCONVEX_ITK_COMPONENTS ${ITK_MODULE_SAMConvex_DEPENDS} ${ITK_MODULE_SAMConvex-Test_DEPENDS})
list(REMOVE_ITEM SAMCONVEX_ITK_COMPONENTS SAMConvex)
list(REMOVE_DUPLICATES SAMCONVEX_ITK_COMPONENTS)

find_package(ITK REQUIRED COMPONENTS ${SAMCONVEX_ITK_COMPONENTS})
include(${ITK_USE_FILE})
if(ITK_VERSION VERSION_LESS 5.2)
  message(FATAL_ERROR "itk::SAMConvexRegistrationFilter needs ITK 5.2 or newer (found ${ITK_VERSION}).")
endif()
message(STATUS "SAMConvex C++: ITK ${ITK_VERSION}, libtorch ${Torch_VERSION}, Python ${SAMCONVEX_PYTHON}")

samconvex_filter_target(${ITK_LIBRARIES})
# what the tests and the example link besides SAMConvex::Filter (here: the same ITK libraries)
set(SAMCONVEX_TEST_LIBRARIES ${ITK_LIBRARIES})

install(FILES "${SAMCONVEX_SOURCE_ROOT}/include/itkSAMConvexRegistrationFilter.h"
              "${SAMCONVEX_SOURCE_ROOT}/include/itkSAMConvexRegistrationFilter.hxx"
              "${SAMCONVEX_SOURCE_ROOT}/include/itkSAMConvexDefaults.h"
        DESTINATION include/SAMConvex)
