/*=========================================================================
 *
 *  Copyright itk-samconvex developers
 *
 *  Licensed under the Apache License, Version 2.0 (the "License");
 *  you may not use this file except in compliance with the License.
 *  You may obtain a copy of the License at
 *
 *         http://www.apache.org/licenses/LICENSE-2.0.txt
 *
 *  Unless required by applicable law or agreed to in writing, software
 *  distributed under the License is distributed on an "AS IS" BASIS,
 *  WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 *  See the License for the specific language governing permissions and
 *  limitations under the License.
 *
 *=========================================================================*/
#ifndef itkSAMConvexRegistrationFilter_hxx
#define itkSAMConvexRegistrationFilter_hxx

#include "itkSAMConvexRegistrationFilter.h"

#include "itkCastImageFilter.h"
#include "itkImageRegionConstIterator.h"
#include "itkMultiThreaderBase.h"
#include "itkSmoothingRecursiveGaussianImageFilter.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/Device.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <type_traits>
#include <vector>

namespace itk
{
namespace samconvex_detail
{
// Python: space.COORDINATE_TOLERANCE and DIRECTION_TOLERANCE (ITK's defaults)
constexpr double CoordinateTolerance = 1e-6;
constexpr double DirectionTolerance = 1e-6;
// Python: space.SAMPLING_SLACK (voxels): boundary samples count as inside, nearest-neighbour
// ties go up, so that float32 (Python) and double (here) round-off decide nothing
constexpr double SamplingSlack = 1e-3;
constexpr const char * PackageFormat = "1";
constexpr const char * ModelName = "model";

inline double
Seconds(std::chrono::steady_clock::time_point since)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// 3x3 inverse (the grid matrices are direction * spacing: well conditioned)
inline void
Invert3(const double m[3][3], double out[3][3])
{
  const double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
                     m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                     m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  const double inv = 1.0 / det;
  out[0][0] = (m[1][1] * m[2][2] - m[1][2] * m[2][1]) * inv;
  out[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv;
  out[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv;
  out[1][0] = (m[1][2] * m[2][0] - m[1][0] * m[2][2]) * inv;
  out[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv;
  out[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv;
  out[2][0] = (m[1][0] * m[2][1] - m[1][1] * m[2][0]) * inv;
  out[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv;
  out[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv;
}

// Python: warp.linear_along -- clamp to [0, n - 1], lower neighbour at most n - 2
struct LinearTap
{
  SizeValueType lo;
  SizeValueType hi;
  double        w;
};

inline LinearTap
Tap(double coordinate, SizeValueType n)
{
  const double  c = std::min(std::max(coordinate, 0.0), static_cast<double>(n - 1));
  const double  f = std::floor(c);
  SizeValueType lo = static_cast<SizeValueType>(f);
  if (n >= 2 && lo > n - 2)
  {
    lo = n - 2;
  }
  const SizeValueType hi = std::min<SizeValueType>(lo + 1, n - 1);
  return { lo, hi, c - static_cast<double>(lo) };
}

inline std::string
Triple(const double v[3])
{
  std::ostringstream text;
  text << std::setprecision(6) << "(" << v[0] << ", " << v[1] << ", " << v[2] << ")";
  return text.str();
}
} // namespace samconvex_detail

// ------------------------------------------------------------------------------------------
// construction, inputs, parameters

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SAMConvexRegistrationFilter()
{
  this->SetPrimaryInputName("FixedImage");
  this->AddRequiredInputName("MovingImage");
  this->AddOptionalInputName("InitialTransform");
  this->AddOptionalInputName("FixedMask");
  this->AddOptionalInputName("MovingMask");
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::~SAMConvexRegistrationFilter() =
  default;

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetFixedImage(
  const FixedImageType * image)
{
  this->ProcessObject::SetNthInput(0, const_cast<FixedImageType *>(image));
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
auto
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetFixedImage() const
  -> const FixedImageType *
{
  return itkDynamicCastInDebugMode<const FixedImageType *>(this->ProcessObject::GetPrimaryInput());
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetParameter(
  Parameter & parameter,
  double      value)
{
  if (!parameter.set || parameter.value != value)
  {
    parameter.value = value;
    parameter.set = true;
    this->Modified();
  }
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
double
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::ParameterValue(
  const Parameter & parameter) const
{
  if (parameter.set)
  {
    return parameter.value;
  }
  const auto found = m_Metadata.find(std::string("samconvex.grid.") + parameter.key);
  if (found != m_Metadata.end())
  {
    return std::stod(found->second);
  }
  return parameter.fallback;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetWorkingSpacing(
  double spacingMM)
{
  if (!(spacingMM > 0.0) || !std::isfinite(spacingMM))
  {
    itkExceptionMacro("SetWorkingSpacing(" << spacingMM << "): the working spacing must be a positive number of mm "
                                           << "(the Python default is " << SAMConvexDefaults::WorkingSpacing << " mm).");
  }
  this->SetParameter(m_WorkingSpacing, spacingMM);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
double
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetWorkingSpacing() const
{
  return this->ParameterValue(m_WorkingSpacing);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetMaximumWorkingVoxels(
  SizeValueType voxels)
{
  if (voxels != 0 && voxels < 4096)
  {
    itkExceptionMacro("SetMaximumWorkingVoxels(" << voxels << "): use 0 (no limit) or at least 4096 voxels.");
  }
  this->SetParameter(m_MaximumWorkingVoxels, static_cast<double>(voxels));
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
SizeValueType
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetMaximumWorkingVoxels() const
{
  return static_cast<SizeValueType>(this->ParameterValue(m_MaximumWorkingVoxels));
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetCropToForeground(bool crop)
{
  this->SetParameter(m_CropToForeground, crop ? 1.0 : 0.0);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
bool
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetCropToForeground() const
{
  return this->ParameterValue(m_CropToForeground) != 0.0;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetForegroundThreshold(
  double hu)
{
  this->SetParameter(m_ForegroundThreshold, hu);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
double
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetForegroundThreshold() const
{
  return this->ParameterValue(m_ForegroundThreshold);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetCropMargin(double marginMM)
{
  if (!(marginMM >= 0.0))
  {
    itkExceptionMacro("SetCropMargin(" << marginMM << "): the crop margin must be >= 0 mm.");
  }
  this->SetParameter(m_CropMargin, marginMM);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
double
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetCropMargin() const
{
  return this->ParameterValue(m_CropMargin);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SetAntialias(bool antialias)
{
  this->SetParameter(m_Antialias, antialias ? 1.0 : 0.0);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
bool
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetAntialias() const
{
  return this->ParameterValue(m_Antialias) != 0.0;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
std::string
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetSolverConfiguration() const
{
  const auto found = m_Metadata.find("samconvex.config");
  return found == m_Metadata.end() ? std::string() : found->second;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
double
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::PackageValue(
  const std::string & key) const
{
  const auto found = m_Metadata.find(key);
  if (found == m_Metadata.end())
  {
    itkExceptionMacro("the solver package " << m_LoadedPackageFileName << " has no metadata key '" << key
                                            << "'; re-export it with this version: samconvex export --out "
                                            << m_LoadedPackageFileName);
  }
  return std::stod(found->second);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
auto
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GetTransform()
  -> OutputTransformType *
{
  if (m_Transform.IsNull())
  {
    itkExceptionMacro("GetTransform() has nothing to return yet: call Update() first.");
  }
  return m_Transform.GetPointer();
}

// ------------------------------------------------------------------------------------------
// the package

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::LoadSolverPackage()
{
  const std::string & path = m_SolverPackageFileName;
  if (path.empty())
  {
    itkExceptionMacro("no solver package: call SetSolverPackageFileName(\"solver.pt2\") with a package written by "
                      "`samconvex export --out solver.pt2` (Python package itk-samconvex).");
  }
  if (m_Package && m_LoadedPackageFileName == path && m_LoadedDevice == m_Device)
  {
    return;
  }
  if (!std::ifstream(path, std::ios::binary).good())
  {
    itkExceptionMacro("the solver package " << path << " does not exist or cannot be read; write it with "
                                            << "`samconvex export --out " << path << "`.");
  }
  std::unordered_map<std::string, std::string> metadata;
  try
  {
    metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, samconvex_detail::ModelName);
  }
  catch (const std::exception & error)
  {
    itkExceptionMacro("cannot read " << path << " as an AOTInductor package (" << error.what()
                                     << "); write it with `samconvex export --out " << path << "`.");
  }
  const auto format = metadata.find("samconvex.format");
  if (format == metadata.end())
  {
    itkExceptionMacro(<< path << " is an AOTInductor package but not a SAMConvex solver (no samconvex.format "
                      << "metadata); write one with `samconvex export --out " << path << "`.");
  }
  if (format->second != samconvex_detail::PackageFormat)
  {
    itkExceptionMacro("the solver package " << path << " has format " << format->second << ", this filter reads "
                                            << samconvex_detail::PackageFormat
                                            << "; re-export it with the matching itk-samconvex version.");
  }
  const std::string packageDevice = metadata["samconvex.device"];
  const bool        packageOnCUDA = packageDevice.rfind("cuda", 0) == 0;
  const std::string requested = m_Device.empty() || m_Device == "auto" ? packageDevice : m_Device;
  const bool        requestedCUDA = requested.rfind("cuda", 0) == 0;
  if (requested != "cpu" && !requestedCUDA)
  {
    itkExceptionMacro("SetDevice(\"" << m_Device << "\") is not understood; use \"auto\" (the package's device), "
                                     << "\"cpu\", \"cuda\" or \"cuda:N\".");
  }
  if (requestedCUDA != packageOnCUDA)
  {
    itkExceptionMacro("the solver package " << path << " was exported for " << packageDevice
                                            << " and cannot run on " << requested << "; re-export it with "
                                            << "`samconvex export --device " << (requestedCUDA ? "cuda" : "cpu")
                                            << " --out " << path << "` or call SetDevice(\"auto\").");
  }
  c10::DeviceIndex deviceIndex = -1;
  if (requestedCUDA)
  {
    if (!at::hasCUDA())
    {
      itkExceptionMacro("device " << requested << " was requested but this libtorch has no usable CUDA device; "
                                  << "build against a CUDA libtorch on a machine with a GPU, or export the solver "
                                  << "for the CPU (`samconvex export --device cpu`).");
    }
    const auto colon = requested.find(':');
    if (colon != std::string::npos)
    {
      deviceIndex = static_cast<c10::DeviceIndex>(std::stoi(requested.substr(colon + 1)));
    }
  }
  try
  {
    m_Package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
      path, samconvex_detail::ModelName, false, 1, deviceIndex);
  }
  catch (const std::exception & error)
  {
    m_Package.reset();
    itkExceptionMacro("cannot load the solver package " << path << ": " << error.what()
                                                        << " (was it exported with the same torch version as "
                                                        << "this libtorch?)");
  }
  m_Metadata.clear();
  for (const auto & item : metadata)
  {
    m_Metadata[item.first] = item.second;
  }
  m_LoadedPackageFileName = path;
  m_LoadedDevice = m_Device;
}

// ------------------------------------------------------------------------------------------
// pipeline

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GenerateOutputInformation()
{
  const FixedImageType * fixed = this->GetFixedImage();
  DisplacementFieldType * output = this->GetOutput();
  if (fixed == nullptr || output == nullptr)
  {
    return;
  }
  output->SetLargestPossibleRegion(fixed->GetLargestPossibleRegion());
  output->SetSpacing(fixed->GetSpacing());
  output->SetOrigin(fixed->GetOrigin());
  output->SetDirection(fixed->GetDirection());
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GenerateInputRequestedRegion()
{
  // the registration needs every input whole
  for (const auto & name : this->GetInputNames())
  {
    if (auto * image = dynamic_cast<ImageBase<3> *>(this->ProcessObject::GetInput(name)))
    {
      image->SetRequestedRegionToLargestPossibleRegion();
    }
  }
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::EnlargeOutputRequestedRegion(
  DataObject * output)
{
  Superclass::EnlargeOutputRequestedRegion(output);
  output->SetRequestedRegionToLargestPossibleRegion();
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
auto
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GridOf(
  const ImageBase<3> * image) -> Grid
{
  Grid grid;
  const auto size = image->GetLargestPossibleRegion().GetSize();
  for (unsigned int a = 0; a < 3; ++a)
  {
    grid.size[a] = size[a];
    grid.spacing[a] = image->GetSpacing()[a];
    grid.origin[a] = image->GetOrigin()[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      grid.direction[a][b] = image->GetDirection()(a, b);
    }
  }
  return grid;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::CheckImage(
  const ImageBase<3> * image,
  const char *         name) const
{
  const Grid grid = GridOf(image);
  for (unsigned int a = 0; a < 3; ++a)
  {
    if (grid.size[a] < 2)
    {
      itkExceptionMacro("the " << name << " has size " << grid.size[0] << " x " << grid.size[1] << " x " << grid.size[2]
                               << "; every axis needs at least 2 voxels.");
    }
    if (!(grid.spacing[a] > 0.0))
    {
      itkExceptionMacro("the " << name << " has non-positive spacing " << samconvex_detail::Triple(grid.spacing)
                               << "; fix its header.");
    }
  }
  double gramError = 0.0;
  for (unsigned int a = 0; a < 3; ++a)
  {
    for (unsigned int b = 0; b < 3; ++b)
    {
      double dot = 0.0;
      for (unsigned int c = 0; c < 3; ++c)
      {
        dot += grid.direction[c][a] * grid.direction[c][b];
      }
      gramError = std::max(gramError, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  }
  if (!std::isfinite(gramError) || gramError > 1e-3)
  {
    itkExceptionMacro("the " << name << " has a direction matrix that is not orthonormal (|D^T D - I| up to "
                             << gramError << "); fix the image header (re-orthonormalise the direction cosines).");
  }
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
template <typename TImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::CheckFinite(
  const TImage * image,
  const char *   name) const
{
  using PixelType = typename TImage::PixelType;
  if constexpr (std::numeric_limits<PixelType>::has_quiet_NaN || std::numeric_limits<PixelType>::has_infinity)
  {
    SizeValueType                           bad = 0;
    ImageRegionConstIterator<TImage> it(image, image->GetLargestPossibleRegion());
    for (; !it.IsAtEnd(); ++it)
    {
      if (!std::isfinite(static_cast<double>(it.Get())))
      {
        ++bad;
      }
    }
    if (bad > 0)
    {
      itkExceptionMacro("the " << name << " contains " << bad << " NaN or infinite voxel values; replace them (for CT, "
                               << "with -1024 HU air) before registering.");
    }
  }
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::CheckMask(
  const MaskImageType * mask,
  const char *          name,
  const ImageBase<3> *  image,
  const char *          imageName) const
{
  this->CheckImage(mask, name);
  const Grid   m = GridOf(mask);
  const Grid   g = GridOf(image);
  const double tolerance =
    samconvex_detail::CoordinateTolerance * std::max({ g.spacing[0], g.spacing[1], g.spacing[2] });
  bool same = true;
  for (unsigned int a = 0; a < 3; ++a)
  {
    same = same && m.size[a] == g.size[a] && std::abs(m.spacing[a] - g.spacing[a]) <= tolerance &&
           std::abs(m.origin[a] - g.origin[a]) <= tolerance;
    for (unsigned int b = 0; b < 3; ++b)
    {
      same = same && std::abs(m.direction[a][b] - g.direction[a][b]) <= samconvex_detail::DirectionTolerance;
    }
  }
  if (!same)
  {
    itkExceptionMacro("the " << name << " is not on the grid of the " << imageName << " (mask size/spacing/origin "
                             << m.size[0] << "x" << m.size[1] << "x" << m.size[2] << "/"
                             << samconvex_detail::Triple(m.spacing) << "/" << samconvex_detail::Triple(m.origin)
                             << " vs image " << g.size[0] << "x" << g.size[1] << "x" << g.size[2] << "/"
                             << samconvex_detail::Triple(g.spacing) << "/" << samconvex_detail::Triple(g.origin)
                             << "); resample the mask onto the image with nearest-neighbour interpolation first.");
  }
  bool any = false;
  for (ImageRegionConstIterator<MaskImageType> it(mask, mask->GetLargestPossibleRegion()); !it.IsAtEnd() && !any; ++it)
  {
    any = it.Get() != NumericTraits<typename MaskImageType::PixelType>::ZeroValue();
  }
  if (!any)
  {
    itkExceptionMacro("the " << name << " is empty (no non-zero voxel); pass a mask that covers the region to register, "
                             << "or no mask.");
  }
}

// Python: space.foreground_box
template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
bool
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::ForegroundBox(
  double low[3],
  double high[3]) const
{
  const FixedImageType * fixed = this->GetFixedImage();
  const Grid             grid = GridOf(fixed);
  const double           threshold = this->GetForegroundThreshold();
  const double           margin = this->GetCropMargin();
  IndexValueType         lo[3] = { NumericTraits<IndexValueType>::max(), NumericTraits<IndexValueType>::max(),
                           NumericTraits<IndexValueType>::max() };
  IndexValueType         hi[3] = { -1, -1, -1 };
  const auto             start = fixed->GetLargestPossibleRegion().GetIndex();
  ImageRegionConstIteratorWithIndex<FixedImageType> it(fixed, fixed->GetLargestPossibleRegion());
  for (; !it.IsAtEnd(); ++it)
  {
    if (static_cast<double>(it.Get()) > threshold)
    {
      const auto index = it.GetIndex();
      for (unsigned int a = 0; a < 3; ++a)
      {
        lo[a] = std::min(lo[a], index[a] - start[a]);
        hi[a] = std::max(hi[a], index[a] - start[a]);
      }
    }
  }
  if (hi[0] < 0)
  {
    return false;
  }
  for (unsigned int a = 0; a < 3; ++a)
  {
    const double sp = grid.spacing[a];
    low[a] = std::max((static_cast<double>(lo[a]) - 0.5) * sp - margin, -0.5 * sp);
    high[a] = std::min((static_cast<double>(hi[a]) + 0.5) * sp + margin, (static_cast<double>(grid.size[a]) - 0.5) * sp);
  }
  return true;
}

// Python: space.working_grid
template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
auto
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::MakeWorkingGrid(
  const Grid &   fixed,
  double         spacing,
  const double * low,
  const double * high) const -> Grid
{
  const auto multiple = static_cast<SizeValueType>(this->PackageValue("samconvex.multiple"));
  Grid       grid;
  double     first[3];
  for (unsigned int a = 0; a < 3; ++a)
  {
    const double l = low ? low[a] : -0.5 * fixed.spacing[a];
    const double h = high ? high[a] : (static_cast<double>(fixed.size[a]) - 0.5) * fixed.spacing[a];
    auto         n = static_cast<SizeValueType>(std::max(std::ceil((h - l) / spacing - 1e-9), 1.0));
    n = (n + multiple - 1) / multiple * multiple;
    grid.size[a] = n;
    grid.spacing[a] = spacing;
    first[a] = 0.5 * (l + h) - 0.5 * static_cast<double>(n - 1) * spacing;
  }
  for (unsigned int a = 0; a < 3; ++a)
  {
    grid.origin[a] = fixed.origin[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      grid.origin[a] += fixed.direction[a][b] * first[b];
      grid.direction[a][b] = fixed.direction[a][b];
    }
  }
  return grid;
}

// Python: space.as_float_image + space.antialias
template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
template <typename TImage>
auto
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::PrepareImage(
  const TImage * image,
  double         spacing) const -> WorkingImagePointer
{
  using CastType = CastImageFilter<TImage, WorkingImageType>;
  auto cast = CastType::New();
  cast->SetInput(image);
  cast->Update();
  WorkingImagePointer result = cast->GetOutput();
  result->DisconnectPipeline();
  if (!this->GetAntialias())
  {
    return result;
  }
  using SmootherType = SmoothingRecursiveGaussianImageFilter<WorkingImageType, WorkingImageType>;
  typename SmootherType::SigmaArrayType sigma;
  bool                                  blur = false;
  for (unsigned int a = 0; a < 3; ++a)
  {
    const double sp = image->GetSpacing()[a];
    sigma[a] = std::sqrt(std::max(spacing * spacing - sp * sp, 0.0)) / 2.3548;
    blur = blur || !(sigma[a] < 0.25 * sp);
    // recursive Gaussian handles sigma <= 0 badly: a tiny positive value on coarse axes
    sigma[a] = std::max(sigma[a], 1e-3 * sp);
  }
  if (!blur)
  {
    return result;
  }
  auto smoother = SmootherType::New();
  smoother->SetInput(result);
  smoother->SetSigmaArray(sigma);
  smoother->SetNumberOfWorkUnits(this->GetNumberOfWorkUnits());
  smoother->Update();
  WorkingImagePointer smoothed = smoother->GetOutput();
  smoothed->DisconnectPipeline();
  return smoothed;
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::PhysicalToIndexMatrix(
  const Grid & src,
  double       toIndex[3][3])
{
  double a[3][3];
  for (unsigned int r = 0; r < 3; ++r)
  {
    for (unsigned int c = 0; c < 3; ++c)
    {
      a[r][c] = src.direction[r][c] * src.spacing[c];
    }
  }
  samconvex_detail::Invert3(a, toIndex);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SourceIndex(
  const Grid &          grid,
  SizeValueType         i,
  SizeValueType         j,
  SizeValueType         k,
  const TransformType * transform,
  const Grid &          src,
  const double          toIndex[3][3],
  double                c[3])
{
  const double                                idx[3] = { static_cast<double>(i), static_cast<double>(j), static_cast<double>(k) };
  typename TransformType::InputPointType     p;
  for (unsigned int a = 0; a < 3; ++a)
  {
    p[a] = grid.origin[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      p[a] += grid.direction[a][b] * grid.spacing[b] * idx[b];
    }
  }
  if (transform != nullptr)
  {
    p = transform->TransformPoint(p);
  }
  for (unsigned int a = 0; a < 3; ++a)
  {
    c[a] = 0.0;
    for (unsigned int b = 0; b < 3; ++b)
    {
      c[a] += toIndex[a][b] * (p[b] - src.origin[b]);
    }
  }
}

// Python: space.sample_image (trilinear, border replication, "inside" = within the voxel extent)
template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::Sample(
  const WorkingImageType *     image,
  const Grid &                 grid,
  const TransformType *        transform,
  WorkingImageType *           values,
  std::vector<unsigned char> & inside) const
{
  const Grid src = GridOf(image);
  double     toIndex[3][3];
  PhysicalToIndexMatrix(src, toIndex);
  const float * in = image->GetBufferPointer();
  float *       out = values->GetBufferPointer();
  const auto    nx = grid.size[0], ny = grid.size[1], nz = grid.size[2];
  const auto    sx = src.size[0], sy = src.size[1];
  inside.assign(grid.NumberOfVoxels(), 0);
  auto plane = [&](SizeValueType k) {
    for (SizeValueType j = 0; j < ny; ++j)
    {
      for (SizeValueType i = 0; i < nx; ++i)
      {
        double c[3];
        SourceIndex(grid, i, j, k, transform, src, toIndex, c);
        bool in_extent = true;
        for (unsigned int a = 0; a < 3; ++a)
        {
          in_extent = in_extent && c[a] > -0.5 - samconvex_detail::SamplingSlack &&
                      c[a] < static_cast<double>(src.size[a]) - 0.5 + samconvex_detail::SamplingSlack;
        }
        const auto tx = samconvex_detail::Tap(c[0], src.size[0]);
        const auto ty = samconvex_detail::Tap(c[1], src.size[1]);
        const auto tz = samconvex_detail::Tap(c[2], src.size[2]);
        auto       at = [&](SizeValueType x, SizeValueType y, SizeValueType z) {
          return static_cast<double>(in[(z * sy + y) * sx + x]);
        };
        const double v00 = at(tx.lo, ty.lo, tz.lo) * (1 - tx.w) + at(tx.hi, ty.lo, tz.lo) * tx.w;
        const double v10 = at(tx.lo, ty.hi, tz.lo) * (1 - tx.w) + at(tx.hi, ty.hi, tz.lo) * tx.w;
        const double v01 = at(tx.lo, ty.lo, tz.hi) * (1 - tx.w) + at(tx.hi, ty.lo, tz.hi) * tx.w;
        const double v11 = at(tx.lo, ty.hi, tz.hi) * (1 - tx.w) + at(tx.hi, ty.hi, tz.hi) * tx.w;
        const double v0 = v00 * (1 - ty.w) + v10 * ty.w;
        const double v1 = v01 * (1 - ty.w) + v11 * ty.w;
        const SizeValueType o = (k * ny + j) * nx + i;
        out[o] = static_cast<float>(v0 * (1 - tz.w) + v1 * tz.w);
        inside[o] = in_extent ? 1 : 0;
      }
    }
  };
  MultiThreaderBase::Pointer threader = MultiThreaderBase::New();
  threader->SetNumberOfWorkUnits(this->GetNumberOfWorkUnits());
  threader->ParallelizeArray(0, nz, plane, nullptr);
}

// Python: space.sample_image(nearest=True) != 0 (nearest neighbour, zero outside the extent)
template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::SampleMask(
  const MaskImageType *        mask,
  const Grid &                 grid,
  const TransformType *        transform,
  std::vector<unsigned char> & keep) const
{
  const Grid src = GridOf(mask);
  double     toIndex[3][3];
  PhysicalToIndexMatrix(src, toIndex);
  const auto * in = mask->GetBufferPointer();
  const auto   nx = grid.size[0], ny = grid.size[1], nz = grid.size[2];
  auto         plane = [&](SizeValueType k) {
    for (SizeValueType j = 0; j < ny; ++j)
    {
      for (SizeValueType i = 0; i < nx; ++i)
      {
        double c[3];
        SourceIndex(grid, i, j, k, transform, src, toIndex, c);
        SizeValueType offset = 0;
        SizeValueType stride = 1;
        bool          within = true;
        for (unsigned int a = 0; a < 3; ++a)
        {
          const double r = std::floor(c[a] + 0.5 + samconvex_detail::SamplingSlack); // ties go up
          within = within && r >= 0.0 && r <= static_cast<double>(src.size[a] - 1);
          if (within)
          {
            offset += static_cast<SizeValueType>(r) * stride;
          }
          stride *= src.size[a];
        }
        const SizeValueType o = (k * ny + j) * nx + i;
        const bool          set = within && in[offset] != NumericTraits<typename MaskImageType::PixelType>::ZeroValue();
        keep[o] = keep[o] && set ? 1 : 0;
      }
    }
  };
  MultiThreaderBase::Pointer threader = MultiThreaderBase::New();
  threader->SetNumberOfWorkUnits(this->GetNumberOfWorkUnits());
  threader->ParallelizeArray(0, nz, plane, nullptr);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::GenerateData()
{
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  m_Timings.clear();
  m_Transform = nullptr;
  m_DeformableField = nullptr;

  const FixedImageType *  fixed = this->GetFixedImage();
  const MovingImageType * moving = this->GetMovingImage();
  if (fixed == nullptr || moving == nullptr)
  {
    itkExceptionMacro("SAMConvexRegistrationFilter needs both inputs: call SetFixedImage(fixed) and "
                      "SetMovingImage(moving).");
  }
  this->CheckImage(fixed, "fixed image");
  this->CheckFinite(fixed, "fixed image");
  this->CheckImage(moving, "moving image");
  this->CheckFinite(moving, "moving image");
  const MaskImageType * fixedMask = this->GetFixedMask();
  const MaskImageType * movingMask = this->GetMovingMask();
  if (fixedMask != nullptr)
  {
    this->CheckMask(fixedMask, "fixed mask", fixed, "fixed image");
  }
  if (movingMask != nullptr)
  {
    this->CheckMask(movingMask, "moving mask", moving, "moving image");
  }
  const TransformType * initial = this->GetInitialTransform();
  if (initial != nullptr && (initial->GetInputSpaceDimension() != 3 || initial->GetOutputSpaceDimension() != 3))
  {
    itkExceptionMacro("the initial transform maps " << initial->GetInputSpaceDimension() << "-D to "
                                                    << initial->GetOutputSpaceDimension()
                                                    << "-D points; SAMConvex needs a 3-D transform.");
  }
  this->LoadSolverPackage();

  // --- working grid (Python: registration.register) ----------------------------------------
  const Grid fixedGrid = GridOf(fixed);
  double     low[3], high[3];
  const bool cropped = this->GetCropToForeground() && this->ForegroundBox(low, high);
  const double * lowPtr = cropped ? low : nullptr;
  const double * highPtr = cropped ? high : nullptr;
  double         spacing = this->GetWorkingSpacing();
  Grid           grid = this->MakeWorkingGrid(fixedGrid, spacing, lowPtr, highPtr);
  const auto     budget = this->GetMaximumWorkingVoxels();
  if (budget > 0 && grid.NumberOfVoxels() > budget)
  {
    // grow the spacing until the grid fits the voxel budget (sizes round up to multiples)
    spacing *= std::pow(static_cast<double>(grid.NumberOfVoxels()) / static_cast<double>(budget), 1.0 / 3.0);
    while (true)
    {
      grid = this->MakeWorkingGrid(fixedGrid, spacing, lowPtr, highPtr);
      if (grid.NumberOfVoxels() <= budget)
      {
        break;
      }
      spacing *= SAMConvexDefaults::GridGrowthStep; // Python: GRID_GROWTH_STEP
    }
  }
  spacing = grid.spacing[0];
  const auto multiple = static_cast<SizeValueType>(this->PackageValue("samconvex.multiple"));
  const auto minSize = static_cast<SizeValueType>(this->PackageValue("samconvex.min_size"));
  const auto maxSize = static_cast<SizeValueType>(this->PackageValue("samconvex.max_size"));
  for (unsigned int a = 0; a < 3; ++a)
  {
    if (grid.size[a] % multiple != 0 || grid.size[a] < minSize || grid.size[a] > maxSize)
    {
      itkExceptionMacro("the working grid is " << grid.size[0] << " x " << grid.size[1] << " x " << grid.size[2]
                                               << " voxels at " << spacing << " mm, but the solver package "
                                               << m_LoadedPackageFileName << " accepts multiples of " << multiple
                                               << " between " << minSize << " and " << maxSize
                                               << " voxels per axis (its coarsest level must hold a whole search "
                                               << "window): "
                                               << (grid.size[a] < minSize
                                                     ? "use a smaller working spacing (SetWorkingSpacing), turn "
                                                       "off CropToForeground, or register a larger field of view."
                                                     : "lower SetMaximumWorkingVoxels or raise SetWorkingSpacing, "
                                                       "or export with a larger `samconvex export --max-size`."));
    }
  }
  itkDebugMacro("working grid " << grid.size[0] << "x" << grid.size[1] << "x" << grid.size[2] << " at " << spacing
                                << " mm");

  // --- images onto the working grid (Python: space.sample_image) --------------------------
  auto newWorking = [&grid]() {
    auto                              image = WorkingImageType::New();
    typename WorkingImageType::RegionType region;
    typename WorkingImageType::SpacingType sp;
    typename WorkingImageType::PointType   origin;
    typename WorkingImageType::DirectionType direction;
    for (unsigned int a = 0; a < 3; ++a)
    {
      region.SetSize(a, grid.size[a]);
      sp[a] = grid.spacing[a];
      origin[a] = grid.origin[a];
      for (unsigned int b = 0; b < 3; ++b)
      {
        direction(a, b) = grid.direction[a][b];
      }
    }
    image->SetRegions(region);
    image->SetSpacing(sp);
    image->SetOrigin(origin);
    image->SetDirection(direction);
    image->Allocate();
    return image;
  };
  std::vector<unsigned char> fixedKeep, movingKeep;
  m_WorkingFixed = newWorking();
  m_WorkingMoving = newWorking();
  {
    WorkingImagePointer source = this->PrepareImage(fixed, spacing);
    this->Sample(source, grid, nullptr, m_WorkingFixed, fixedKeep);
  }
  {
    WorkingImagePointer source = this->PrepareImage(moving, spacing);
    this->Sample(source, grid, initial, m_WorkingMoving, movingKeep);
  }
  const SizeValueType voxels = grid.NumberOfVoxels();
  const double        overlap =
    static_cast<double>(std::count(movingKeep.begin(), movingKeep.end(), 1)) / static_cast<double>(voxels);
  if (overlap < 0.01)
  {
    itkExceptionMacro("the moving image does not overlap the fixed image in physical space after the initial "
                      << "transform (" << 100.0 * overlap << "% of the fixed region maps inside the moving image); "
                      << "set an initial transform that aligns them (e.g. an affine registration from elastix).");
  }
  if (fixedMask != nullptr)
  {
    this->SampleMask(fixedMask, grid, nullptr, fixedKeep);
  }
  if (movingMask != nullptr)
  {
    this->SampleMask(movingMask, grid, initial, movingKeep);
  }
  std::vector<float> fixedWeight(fixedKeep.begin(), fixedKeep.end());
  std::vector<float> movingWeight(movingKeep.begin(), movingKeep.end());
  m_Timings["resampling"] = samconvex_detail::Seconds(start);

  // --- the exported solver ----------------------------------------------------------------
  auto       tick = Clock::now();
  at::Tensor field;
  try
  {
    if (m_NumberOfSolverThreads > 0)
    {
      at::set_num_threads(m_NumberOfSolverThreads);
    }
    const std::string deviceName = m_Device.empty() || m_Device == "auto" ? m_Metadata["samconvex.device"] : m_Device;
    const c10::Device device(deviceName);
    const std::vector<int64_t> shape{ 1,
                                      1,
                                      static_cast<int64_t>(grid.size[2]),
                                      static_cast<int64_t>(grid.size[1]),
                                      static_cast<int64_t>(grid.size[0]) };
    const auto options = at::TensorOptions().dtype(at::kFloat);
    std::vector<at::Tensor> inputs{
      at::from_blob(m_WorkingFixed->GetBufferPointer(), shape, options).to(device),
      at::from_blob(m_WorkingMoving->GetBufferPointer(), shape, options).to(device),
      at::from_blob(fixedWeight.data(), shape, options).to(device),
      at::from_blob(movingWeight.data(), shape, options).to(device),
    };
    std::vector<at::Tensor> outputs = m_Package->run(inputs);
    if (outputs.size() != 1)
    {
      itkExceptionMacro("the solver package returned " << outputs.size() << " outputs instead of 1.");
    }
    field = outputs[0].to(c10::Device(c10::kCPU), at::kFloat).contiguous();
  }
  catch (const ExceptionObject &)
  {
    throw;
  }
  catch (const std::exception & error)
  {
    itkExceptionMacro("the solver package " << m_LoadedPackageFileName << " failed on a " << grid.size[0] << " x "
                                            << grid.size[1] << " x " << grid.size[2]
                                            << " working grid: " << error.what());
  }
  m_Timings["solver"] = samconvex_detail::Seconds(tick);

  // --- back to the fixed grid in mm (Python: space.level_grid, space.field_to_grid,
  //     transforms.baked_field) ----------------------------------------------------------
  tick = Clock::now();
  const auto    factor = static_cast<SizeValueType>(this->PackageValue("samconvex.output_factor"));
  Grid          level = grid;
  for (unsigned int a = 0; a < 3; ++a)
  {
    level.size[a] = (grid.size[a] + factor - 1) / factor;
    level.spacing[a] = static_cast<double>(factor) * grid.spacing[a];
    level.origin[a] = grid.origin[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      level.origin[a] += grid.direction[a][b] * 0.5 * static_cast<double>(factor - 1) * grid.spacing[b];
    }
  }
  if (field.dim() != 5 || field.size(1) != 3 || field.size(2) != static_cast<int64_t>(level.size[2]) ||
      field.size(3) != static_cast<int64_t>(level.size[1]) || field.size(4) != static_cast<int64_t>(level.size[0]))
  {
    itkExceptionMacro("the solver package returned a field of shape " << field.sizes() << " for a working grid of "
                                                                      << grid.size[0] << " x " << grid.size[1] << " x "
                                                                      << grid.size[2] << " voxels; expected (1, 3, "
                                                                      << level.size[2] << ", " << level.size[1]
                                                                      << ", " << level.size[0] << ").");
  }
  // target index -> continuous level index, per axis (the grids share the direction)
  double offset[3];
  for (unsigned int a = 0; a < 3; ++a)
  {
    offset[a] = 0.0;
    for (unsigned int b = 0; b < 3; ++b)
    {
      offset[a] += level.direction[b][a] * (fixedGrid.origin[b] - level.origin[b]);
    }
  }
  std::vector<samconvex_detail::LinearTap> taps[3];
  for (unsigned int a = 0; a < 3; ++a)
  {
    taps[a].resize(fixedGrid.size[a]);
    for (SizeValueType i = 0; i < fixedGrid.size[a]; ++i)
    {
      const double position = (offset[a] + static_cast<double>(i) * fixedGrid.spacing[a]) / level.spacing[a];
      taps[a][i] = samconvex_detail::Tap(position, level.size[a]);
    }
  }
  // level voxels (channels z, y, x) -> LPS mm: D diag(level spacing), columns x, y, z
  double toMM[3][3];
  for (unsigned int a = 0; a < 3; ++a)
  {
    for (unsigned int b = 0; b < 3; ++b)
    {
      toMM[a][b] = level.direction[a][b] * level.spacing[b];
    }
  }

  DisplacementFieldType * output = this->GetOutput();
  output->SetBufferedRegion(output->GetRequestedRegion());
  output->Allocate();
  m_DeformableField = DisplacementFieldType::New();
  m_DeformableField->CopyInformation(output);
  m_DeformableField->SetRegions(output->GetLargestPossibleRegion());
  m_DeformableField->Allocate();
  using DoubleFieldType = typename OutputTransformType::DisplacementFieldType;
  auto doubleField = DoubleFieldType::New();
  doubleField->CopyInformation(output);
  doubleField->SetRegions(output->GetLargestPossibleRegion());
  doubleField->Allocate();

  const float * u = field.data_ptr<float>();
  const auto    lx = level.size[0], ly = level.size[1], lz = level.size[2];
  const auto    channel = lx * ly * lz;
  auto *        total = output->GetBufferPointer();
  auto *        deformable = m_DeformableField->GetBufferPointer();
  auto *        totalDouble = doubleField->GetBufferPointer();
  const auto    fx = fixedGrid.size[0], fy = fixedGrid.size[1], fz = fixedGrid.size[2];
  auto          plane = [&](SizeValueType k) {
    using PointType = typename TransformType::InputPointType;
    const auto & tz = taps[2][k];
    for (SizeValueType j = 0; j < fy; ++j)
    {
      const auto & ty = taps[1][j];
      for (SizeValueType i = 0; i < fx; ++i)
      {
        const auto & tx = taps[0][i];
        double       voxel[3]; // level voxels, tensor channel order (z, y, x)
        for (unsigned int c = 0; c < 3; ++c)
        {
          const float * f = u + c * channel;
          auto          at = [&](SizeValueType x, SizeValueType y, SizeValueType z) {
            return static_cast<double>(f[(z * ly + y) * lx + x]);
          };
          const double v00 = at(tx.lo, ty.lo, tz.lo) * (1 - tx.w) + at(tx.hi, ty.lo, tz.lo) * tx.w;
          const double v10 = at(tx.lo, ty.hi, tz.lo) * (1 - tx.w) + at(tx.hi, ty.hi, tz.lo) * tx.w;
          const double v01 = at(tx.lo, ty.lo, tz.hi) * (1 - tx.w) + at(tx.hi, ty.lo, tz.hi) * tx.w;
          const double v11 = at(tx.lo, ty.hi, tz.hi) * (1 - tx.w) + at(tx.hi, ty.hi, tz.hi) * tx.w;
          voxel[c] = (v00 * (1 - ty.w) + v10 * ty.w) * (1 - tz.w) + (v01 * (1 - ty.w) + v11 * ty.w) * tz.w;
        }
        const double uxyz[3] = { voxel[2], voxel[1], voxel[0] };
        double       mm[3];
        for (unsigned int a = 0; a < 3; ++a)
        {
          mm[a] = toMM[a][0] * uxyz[0] + toMM[a][1] * uxyz[1] + toMM[a][2] * uxyz[2];
        }
        double t[3] = { mm[0], mm[1], mm[2] };
        if (initial != nullptr)
        {
          // A(x + u(x)) - x
          const double idx[3] = { static_cast<double>(i), static_cast<double>(j), static_cast<double>(k) };
          PointType    x, moved;
          for (unsigned int a = 0; a < 3; ++a)
          {
            x[a] = fixedGrid.origin[a];
            for (unsigned int b = 0; b < 3; ++b)
            {
              x[a] += fixedGrid.direction[a][b] * fixedGrid.spacing[b] * idx[b];
            }
            moved[a] = x[a] + mm[a];
          }
          const PointType mapped = initial->TransformPoint(moved);
          for (unsigned int a = 0; a < 3; ++a)
          {
            t[a] = mapped[a] - x[a];
          }
        }
        const SizeValueType o = (k * fy + j) * fx + i;
        for (unsigned int a = 0; a < 3; ++a)
        {
          deformable[o][a] = static_cast<typename DisplacementFieldType::PixelType::ValueType>(mm[a]);
          total[o][a] = static_cast<typename DisplacementFieldType::PixelType::ValueType>(t[a]);
          // the transform holds what the output holds (float precision), as in Python
          totalDouble[o][a] = static_cast<double>(total[o][a]);
        }
      }
    }
  };
  MultiThreaderBase::Pointer threader = MultiThreaderBase::New();
  threader->SetNumberOfWorkUnits(this->GetNumberOfWorkUnits());
  threader->ParallelizeArray(0, fz, plane, nullptr);
  m_Transform = OutputTransformType::New();
  m_Transform->SetDisplacementField(doubleField);
  m_Timings["output"] = samconvex_detail::Seconds(tick);
  m_Timings["total"] = samconvex_detail::Seconds(start);
}

template <typename TFixedImage, typename TMovingImage, typename TDisplacementField, typename TMaskImage>
void
SAMConvexRegistrationFilter<TFixedImage, TMovingImage, TDisplacementField, TMaskImage>::PrintSelf(
  std::ostream & os,
  Indent         indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "SolverPackageFileName: " << m_SolverPackageFileName << std::endl;
  os << indent << "Device: " << (m_Device.empty() || m_Device == "auto" ? "auto (package's)" : m_Device)
     << std::endl;
  os << indent << "NumberOfSolverThreads: " << m_NumberOfSolverThreads << std::endl;
  os << indent << "WorkingSpacing: " << this->GetWorkingSpacing() << std::endl;
  os << indent << "MaximumWorkingVoxels: " << this->GetMaximumWorkingVoxels() << std::endl;
  os << indent << "CropToForeground: " << this->GetCropToForeground() << std::endl;
  os << indent << "ForegroundThreshold: " << this->GetForegroundThreshold() << std::endl;
  os << indent << "CropMargin: " << this->GetCropMargin() << std::endl;
  os << indent << "Antialias: " << this->GetAntialias() << std::endl;
  os << indent << "Package loaded: " << (m_Package ? m_LoadedPackageFileName : std::string("no")) << std::endl;
}

} // end namespace itk

#endif // itkSAMConvexRegistrationFilter_hxx
