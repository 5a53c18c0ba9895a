// itkSAMConvexDefaults.h: defaults of itk::SAMConvexRegistrationFilter.
//
// GENERATED from python/itk_samconvex/solver/config.py (SAMConvexConfig() defaults and
// GRID_GROWTH_STEP) by `python -m itk_samconvex.apps.cxx_header` -- do not edit.
// Change config.py and regenerate (CMake does it at configure time when SAMCONVEX_PYTHON
// is set; test/test_cxx_defaults.py fails while this copy is stale).
// Each comment names the config field; docs/cxx.md maps the C++ setters onto them.
#ifndef itkSAMConvexDefaults_h
#define itkSAMConvexDefaults_h

#include "itkIntTypes.h"

namespace itk
{
namespace SAMConvexDefaults
{
constexpr double        WorkingSpacing = 2.0;           // working_spacing_mm (mm)
constexpr SizeValueType MaximumWorkingVoxels = 2500000; // max_working_voxels (None -> 0: no limit)
constexpr bool          CropToForeground = true;        // crop_to_foreground
constexpr double        ForegroundThreshold = -500.0;   // foreground_threshold_hu (HU)
constexpr double        CropMargin = 16.0;              // crop_margin_mm (mm)
constexpr bool          Antialias = true;               // antialias
constexpr const char *  Device = "auto";                // device ("auto": the package's device)
constexpr int           NumberOfSolverThreads = 0;      // num_threads (None -> 0: libtorch's setting)
constexpr double        GridGrowthStep = 1.02;          // GRID_GROWTH_STEP (spacing factor per step)
} // namespace SAMConvexDefaults
} // namespace itk

#endif // itkSAMConvexDefaults_h
