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
// SAMConvexRegister: register two CT images from the command line with the C++ filter.
//
//   samconvex export --out solver.pt2                # once, in Python
//   SAMConvexRegister solver.pt2 fixed.nii.gz moving.nii.gz out/
//
// Writes out/field.nii.gz (T(x) - x, LPS mm, fixed grid), out/transform.h5 (the same as a
// DisplacementFieldTransform: fixed -> moving points) and out/warped.nii.gz (the moving image
// resampled onto the fixed grid through T, linear interpolation).

#include "itkSAMConvexRegistrationFilter.h"

#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkResampleImageFilter.h"
#include "itkTransformFileReader.h"
#include "itkTransformFileWriter.h"

// Builds that include ITK's UseITK.cmake (cmake/SAMConvexCxx.cmake) register the image and
// transform IO factories automatically (ITK_IO_FACTORY_REGISTER_MANAGER). Builds through ITK's
// module machinery (ITKModuleExternal, Modules/Remote) do not: register those of
// itk-module.cmake's TEST_DEPENDS here.
#ifndef ITK_IO_FACTORY_REGISTER_MANAGER
#  include "itkHDF5TransformIOFactory.h"
#  include "itkMatlabTransformIOFactory.h"
#  include "itkMetaImageIOFactory.h"
#  include "itkNiftiImageIOFactory.h"
#  include "itkNrrdImageIOFactory.h"
#  include "itkTxtTransformIOFactory.h"
namespace
{
void
RegisterIOFactories()
{
  itk::MetaImageIOFactory::RegisterOneFactory();
  itk::NiftiImageIOFactory::RegisterOneFactory();
  itk::NrrdImageIOFactory::RegisterOneFactory();
  itk::HDF5TransformIOFactory::RegisterOneFactory();
  itk::TxtTransformIOFactory::RegisterOneFactory();
  itk::MatlabTransformIOFactory::RegisterOneFactory();
}
} // namespace
#else
namespace
{
void
RegisterIOFactories()
{}
} // namespace
#endif

#include <cstdlib>
#include <iostream>
#include <string>

namespace
{
void
Usage(const char * name)
{
  std::cerr
    << "usage: " << name << " SOLVER.pt2 FIXED MOVING OUT_DIR [options]\n"
    << "  SOLVER.pt2                 package written by `samconvex export --out SOLVER.pt2`\n"
    << "  FIXED, MOVING              3-D images ITK can read (CT in HU)\n"
    << "  OUT_DIR                    existing folder: field.nii.gz, transform.h5, warped.nii.gz\n"
    << "options:\n"
    << "  --initial-transform FILE   fixed -> moving pre-alignment (.h5 .tfm .mat)\n"
    << "  --fixed-mask FILE          only non-zero voxels drive the data term (on FIXED's grid)\n"
    << "  --moving-mask FILE         the same for MOVING\n"
    << "  --working-spacing MM       working-grid spacing (default: the package's, 2 mm)\n"
    << "  --no-crop                  work on the whole fixed field of view\n"
    << "  --device DEVICE            cpu or cuda[:N] (default: the package's device)\n"
    << "  --threads N                solver threads (default: libtorch's)\n";
}
} // namespace

int
main(int argc, char * argv[])
{
  RegisterIOFactories();
  if (argc < 5)
  {
    Usage(argv[0]);
    return EXIT_FAILURE;
  }
  using ImageType = itk::Image<float, 3>;
  using MaskType = itk::Image<unsigned char, 3>;
  using FilterType = itk::SAMConvexRegistrationFilter<ImageType, ImageType>;
  const std::string out = argv[4];
  try
  {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(argv[1]);
    filter->SetFixedImage(itk::ReadImage<ImageType>(argv[2]));
    auto moving = itk::ReadImage<ImageType>(argv[3]);
    filter->SetMovingImage(moving);
    for (int i = 5; i < argc; ++i)
    {
      const std::string option = argv[i];
      const bool        hasValue = i + 1 < argc;
      if (option == "--initial-transform" && hasValue)
      {
        auto reader = itk::TransformFileReaderTemplate<double>::New();
        reader->SetFileName(argv[++i]);
        reader->Update();
        auto * transform = dynamic_cast<FilterType::TransformType *>(reader->GetTransformList()->front().GetPointer());
        if (transform == nullptr)
        {
          std::cerr << "error: " << argv[i] << " does not hold a 3-D transform" << std::endl;
          return EXIT_FAILURE;
        }
        filter->SetInitialTransform(transform);
      }
      else if (option == "--fixed-mask" && hasValue)
      {
        filter->SetFixedMask(itk::ReadImage<MaskType>(argv[++i]));
      }
      else if (option == "--moving-mask" && hasValue)
      {
        filter->SetMovingMask(itk::ReadImage<MaskType>(argv[++i]));
      }
      else if (option == "--working-spacing" && hasValue)
      {
        filter->SetWorkingSpacing(std::stod(argv[++i]));
      }
      else if (option == "--no-crop")
      {
        filter->CropToForegroundOff();
      }
      else if (option == "--device" && hasValue)
      {
        filter->SetDevice(argv[++i]);
      }
      else if (option == "--threads" && hasValue)
      {
        filter->SetNumberOfSolverThreads(std::stoi(argv[++i]));
      }
      else
      {
        std::cerr << "error: unknown option or missing value: " << option << std::endl;
        Usage(argv[0]);
        return EXIT_FAILURE;
      }
    }
    filter->Update();

    itk::WriteImage(filter->GetOutput(), out + "/field.nii.gz");
    auto writer = itk::TransformFileWriterTemplate<double>::New();
    writer->SetInput(filter->GetTransform());
    writer->SetFileName(out + "/transform.h5");
    writer->Update();

    using ResampleType = itk::ResampleImageFilter<ImageType, ImageType, double>;
    auto resample = ResampleType::New();
    resample->SetInput(moving);
    resample->SetTransform(filter->GetTransform());
    resample->SetUseReferenceImage(true);
    resample->SetReferenceImage(filter->GetOutput());
    resample->SetDefaultPixelValue(-1024.0f);
    itk::WriteImage(resample->GetOutput(), out + "/warped.nii.gz");

    const auto * working = filter->GetWorkingFixedImage();
    const auto   size = working->GetLargestPossibleRegion().GetSize();
    const auto & t = filter->GetTimings();
    std::cout << "registered on a " << size[0] << " x " << size[1] << " x " << size[2] << " working grid at "
              << working->GetSpacing()[0] << " mm in " << t.at("total") << " s (resampling " << t.at("resampling")
              << " s, solver " << t.at("solver") << " s, output " << t.at("output") << " s); wrote " << out
              << "/field.nii.gz, transform.h5, warped.nii.gz" << std::endl;
  }
  catch (const itk::ExceptionObject & error)
  {
    std::cerr << "error: " << error.GetDescription() << std::endl;
    return EXIT_FAILURE;
  }
  catch (const std::exception & error)
  {
    std::cerr << "error: " << error.what() << std::endl;
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
