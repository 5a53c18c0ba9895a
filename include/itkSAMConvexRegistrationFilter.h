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
#ifndef itkSAMConvexRegistrationFilter_h
#define itkSAMConvexRegistrationFilter_h

#include "itkDataObjectDecorator.h"
#include "itkDisplacementFieldTransform.h"
#include "itkImage.h"
#include "itkImageSource.h"
#include "itkSAMConvexDefaults.h"
#include "itkTransform.h"
#include "itkVector.h"

#include <map>
#include <memory>
#include <string>

namespace torch
{
namespace inductor
{
class AOTIModelPackageLoader;
} // namespace inductor
} // namespace torch

namespace itk
{

/** \class SAMConvexRegistrationFilter
 * \brief SAMConvex CT deformable registration, running the solver exported from Python.
 *
 * The registration of the itk-samconvex Python package (MIND-SSC features, a coarse-to-fine
 * pyramid of local cost volumes with coupled convex optimisation, Adam instance optimisation)
 * as an ITK filter for C++ applications. The solver is the Python one, exported ahead of time
 * into an AOTInductor package:
 *
 * \code
 *   samconvex export --out solver.pt2 --preset default
 * \endcode
 *
 * and executed here with libtorch (on the CPU, or on a GPU for a package exported on CUDA).
 * This filter does what the Python front end does around the solver, the same way:
 *
 * -# the working grid: the fixed image's direction, isotropic spacing WorkingSpacing (grown
 *    until the grid has at most MaximumWorkingVoxels), covering the fixed image's extent, or
 *    its foreground (voxels above ForegroundThreshold plus CropMargin) with CropToForeground;
 *    sizes rounded up to multiples of the package's coarsest factor (8) and centred;
 * -# both images, Gaussian pre-filtered when finer than the working spacing (Antialias), are
 *    sampled at the working voxels by trilinear interpolation with border replication, the
 *    moving image through the initial transform; samples outside an image and outside the
 *    masks are excluded from the data term;
 * -# the package returns the displacement on a level grid in voxels, which is interpolated
 *    (trilinear, border clamped) at the fixed image's voxels, converted to LPS millimetres, and
 *    composed with the initial transform A: T(x) = A(x + u(x)).
 *
 * Inputs: the fixed image (primary), the moving image, an optional initial transform
 * (fixed -> moving, any itk::Transform<double, 3, 3>), optional fixed and moving masks (non-zero
 * voxels count; on their image's grid).
 *
 * Output: the displacement field T(x) - x on the fixed image's grid (LPS mm) as
 * TDisplacementField (Image<Vector<float, 3>, 3> by default). GetTransform() returns the same
 * as a DisplacementFieldTransform<double, 3>, which maps fixed physical points to moving ones
 * (warped(x) = moving(T(x)), the ITK convention), for ResampleImageFilter.
 *
 * Parameters. The solver parameters (levels, search radii, coupling, instance optimisation)
 * are baked into the package; GetSolverConfiguration() returns them (JSON). The working-grid
 * parameters below mirror the Python config (working_spacing_mm, max_working_voxels,
 * crop_to_foreground, foreground_threshold_hu, crop_margin_mm, antialias): each defaults to
 * the value the package was exported with, and a Set call overrides it.
 *
 * Sizes. The package accepts working grids whose sizes are multiples of its coarsest factor
 * (8) between a minimum (40 voxels for the presets: the coarsest level must hold a whole
 * search window) and a maximum. The compiled package does not check this, so this filter
 * does, with an exception that says what to change.
 *
 * \ingroup SAMConvex
 */
template <typename TFixedImage,
          typename TMovingImage = TFixedImage,
          typename TDisplacementField = Image<Vector<float, 3>, 3>,
          typename TMaskImage = Image<unsigned char, 3>>
class ITK_TEMPLATE_EXPORT SAMConvexRegistrationFilter : public ImageSource<TDisplacementField>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(SAMConvexRegistrationFilter);

  using Self = SAMConvexRegistrationFilter;
  using Superclass = ImageSource<TDisplacementField>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(SAMConvexRegistrationFilter, ImageSource);

  static constexpr unsigned int ImageDimension = 3;
  static_assert(TFixedImage::ImageDimension == 3, "SAMConvex registers 3-D images");
  static_assert(TMovingImage::ImageDimension == 3, "SAMConvex registers 3-D images");
  static_assert(TDisplacementField::ImageDimension == 3, "the displacement field is 3-D");
  static_assert(TMaskImage::ImageDimension == 3, "masks are 3-D images");
  static_assert(TDisplacementField::PixelType::Dimension == 3, "field pixels are 3-vectors");

  using FixedImageType = TFixedImage;
  using MovingImageType = TMovingImage;
  using MaskImageType = TMaskImage;
  using DisplacementFieldType = TDisplacementField;
  using DisplacementFieldPointer = typename DisplacementFieldType::Pointer;
  using TransformType = Transform<double, 3, 3>;
  using TransformConstPointer = typename TransformType::ConstPointer;
  using DecoratedTransformType = DataObjectDecorator<TransformType>;
  using OutputTransformType = DisplacementFieldTransform<double, 3>;
  using OutputTransformPointer = typename OutputTransformType::Pointer;
  using WorkingImageType = Image<float, 3>;
  using WorkingImagePointer = typename WorkingImageType::Pointer;
  using SizeValueType = itk::SizeValueType;
  using TimingsType = std::map<std::string, double>;

  /** The fixed image (primary input): any 3-D scalar image, e.g. CT in Hounsfield units. */
  void
  SetFixedImage(const FixedImageType * image);
  const FixedImageType *
  GetFixedImage() const;

  /** The moving image: any 3-D scalar image, on any grid. */
  itkSetInputMacro(MovingImage, MovingImageType);
  itkGetInputMacro(MovingImage, MovingImageType);

  /** Optional fixed -> moving pre-alignment A; the output is T(x) = A(x + u(x)). */
  itkSetGetDecoratedObjectInputMacro(InitialTransform, TransformType);

  /** Optional masks (non-zero = use), each on its image's grid. */
  itkSetInputMacro(FixedMask, MaskImageType);
  itkGetInputMacro(FixedMask, MaskImageType);
  itkSetInputMacro(MovingMask, MaskImageType);
  itkGetInputMacro(MovingMask, MaskImageType);

  /** The AOTInductor package written by `samconvex export` (required). */
  itkSetStringMacro(SolverPackageFileName);
  itkGetStringMacro(SolverPackageFileName);

  /** "auto" (default, Python `device`; "" too: the package's device), "cpu", "cuda" or
   * "cuda:N". A package runs only on the kind of device it was exported for. */
  itkSetStringMacro(Device);
  itkGetStringMacro(Device);

  /** Threads of the libtorch solver; 0 (default) keeps libtorch's setting. */
  itkSetMacro(NumberOfSolverThreads, int);
  itkGetConstMacro(NumberOfSolverThreads, int);

  /** Working-grid parameters (see the class description); default: the package's values. */
  void
  SetWorkingSpacing(double spacingMM);
  double
  GetWorkingSpacing() const;
  void
  SetMaximumWorkingVoxels(SizeValueType voxels); // 0: no limit
  SizeValueType
  GetMaximumWorkingVoxels() const;
  void
  SetCropToForeground(bool crop);
  bool
  GetCropToForeground() const;
  itkBooleanMacro(CropToForeground);
  void
  SetForegroundThreshold(double hu);
  double
  GetForegroundThreshold() const;
  void
  SetCropMargin(double marginMM);
  double
  GetCropMargin() const;
  void
  SetAntialias(bool antialias);
  bool
  GetAntialias() const;
  itkBooleanMacro(Antialias);

  /** Load the package now (GenerateData does it otherwise) to read its metadata. Throws
   * itk::ExceptionObject when the file is missing or is not a SAMConvex solver package. */
  void
  LoadSolverPackage();

  /** Metadata of the loaded package (samconvex.* keys, see `samconvex export --help`). */
  const std::map<std::string, std::string> &
  GetSolverMetadata() const
  {
    return m_Metadata;
  }

  /** The solver parameters baked into the package (JSON), "" before loading it. */
  std::string
  GetSolverConfiguration() const;

  /** The registration as a transform (after Update()): T(x) = A(x + u(x)), fixed -> moving. */
  OutputTransformType *
  GetTransform();

  /** u(x) alone, without the initial transform (after Update()); LPS mm on the fixed grid. */
  const DisplacementFieldType *
  GetDeformableField() const
  {
    return m_DeformableField.GetPointer();
  }

  /** The fixed and moving images as the solver saw them (working grid, float HU). */
  const WorkingImageType *
  GetWorkingFixedImage() const
  {
    return m_WorkingFixed.GetPointer();
  }
  const WorkingImageType *
  GetWorkingMovingImage() const
  {
    return m_WorkingMoving.GetPointer();
  }

  /** Seconds spent per stage in the last Update(): resampling, solver, output, total. */
  const TimingsType &
  GetTimings() const
  {
    return m_Timings;
  }

protected:
  SAMConvexRegistrationFilter();
  ~SAMConvexRegistrationFilter() override;

  void
  PrintSelf(std::ostream & os, Indent indent) const override;

  void
  GenerateOutputInformation() override;
  void
  GenerateInputRequestedRegion() override;
  void
  EnlargeOutputRequestedRegion(DataObject * output) override;
  void
  GenerateData() override;

private:
  /** A 3-D grid in ITK physical space (index order x, y, z). */
  struct Grid
  {
    SizeValueType size[3];
    double        spacing[3];
    double        origin[3];
    double        direction[3][3]; // column a is index axis a

    SizeValueType
    NumberOfVoxels() const
    {
      return size[0] * size[1] * size[2];
    }
  };

  /** A working-grid parameter: set by the user, else the package's value, else the default. */
  struct Parameter
  {
    const char * key;      // Python config name (and package metadata key suffix)
    double       fallback; // Python default (SAMConvexDefaults, generated from config.py)
    double       value;    // the user's value (when set)
    bool         set;
  };

  static Grid
  GridOf(const ImageBase<3> * image);
  void
  CheckImage(const ImageBase<3> * image, const char * name) const;
  template <typename TImage>
  void
  CheckFinite(const TImage * image, const char * name) const;
  void
  CheckMask(const MaskImageType * mask, const char * name, const ImageBase<3> * image, const char * imageName) const;
  bool
  ForegroundBox(double low[3], double high[3]) const;
  Grid
  MakeWorkingGrid(const Grid & fixed, double spacing, const double * low, const double * high) const;
  template <typename TImage>
  WorkingImagePointer
  PrepareImage(const TImage * image, double spacing) const;
  /** Inverse of src's index-to-physical matrix (direction times spacing). */
  static void
  PhysicalToIndexMatrix(const Grid & src, double toIndex[3][3]);
  /** Continuous index in src of working voxel (i, j, k) of grid, mapped through transform. */
  static void
  SourceIndex(const Grid &          grid,
              SizeValueType         i,
              SizeValueType         j,
              SizeValueType         k,
              const TransformType * transform,
              const Grid &          src,
              const double          toIndex[3][3],
              double                c[3]);
  void
  Sample(const WorkingImageType * image,
         const Grid &             grid,
         const TransformType *    transform,
         WorkingImageType *       values,
         std::vector<unsigned char> & inside) const;
  void
  SampleMask(const MaskImageType *        mask,
             const Grid &                 grid,
             const TransformType *        transform,
             std::vector<unsigned char> & keep) const;
  double
  PackageValue(const std::string & key) const;
  double
  ParameterValue(const Parameter & parameter) const;
  void
  SetParameter(Parameter & parameter, double value);

  std::string m_SolverPackageFileName;
  std::string m_Device{ SAMConvexDefaults::Device };
  int         m_NumberOfSolverThreads{ SAMConvexDefaults::NumberOfSolverThreads };

  // fallbacks: the Python defaults, generated from config.py into itkSAMConvexDefaults.h
  Parameter m_WorkingSpacing{ "working_spacing_mm", SAMConvexDefaults::WorkingSpacing, 0.0, false };
  Parameter m_MaximumWorkingVoxels{ "max_working_voxels",
                                    static_cast<double>(SAMConvexDefaults::MaximumWorkingVoxels),
                                    0.0,
                                    false };
  Parameter m_CropToForeground{ "crop_to_foreground", SAMConvexDefaults::CropToForeground ? 1.0 : 0.0, 0.0, false };
  Parameter m_ForegroundThreshold{ "foreground_threshold_hu", SAMConvexDefaults::ForegroundThreshold, 0.0, false };
  Parameter m_CropMargin{ "crop_margin_mm", SAMConvexDefaults::CropMargin, 0.0, false };
  Parameter m_Antialias{ "antialias", SAMConvexDefaults::Antialias ? 1.0 : 0.0, 0.0, false };

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> m_Package;
  std::string                                              m_LoadedPackageFileName;
  std::string                                              m_LoadedDevice;
  std::map<std::string, std::string>                       m_Metadata;

  DisplacementFieldPointer m_DeformableField;
  OutputTransformPointer   m_Transform;
  WorkingImagePointer      m_WorkingFixed;
  WorkingImagePointer      m_WorkingMoving;
  TimingsType              m_Timings;
};

} // end namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkSAMConvexRegistrationFilter.hxx"
#endif

#endif // itkSAMConvexRegistrationFilter_h
