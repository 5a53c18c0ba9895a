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
// ctest driver of itk::SAMConvexRegistrationFilter.
//
//   itkSAMConvexRegistrationFilterTest compare CASE_DIR PACKAGE TOLERANCE_MM
//     Registers CASE_DIR/fixed.mha to CASE_DIR/moving.mha (with CASE_DIR/initial.h5 and
//     CASE_DIR/fixed_mask.mha when present), as test/cxx/make_reference.py did in Python,
//     and checks: the working grid equals the Python one (CASE_DIR/working_grid.txt); the
//     output field is on the fixed grid; max |C++ field - Python field| (vector norm, mm)
//     <= TOLERANCE_MM over the fixed grid; GetTransform() maps x to x + field(x); the
//     deformable field differs from the output exactly by the initial transform.
//
//   itkSAMConvexRegistrationFilterTest errors CASE_DIR PACKAGE
//     Bad inputs raise itk::ExceptionObject with messages that name the problem and the fix.

#include "itkSAMConvexRegistrationFilter.h"

#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionConstIterator.h"
#include "itkTransformFileReader.h"

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

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{
using ImageType = itk::Image<float, 3>;
using MaskType = itk::Image<unsigned char, 3>;
using FieldType = itk::Image<itk::Vector<float, 3>, 3>;
using FilterType = itk::SAMConvexRegistrationFilter<ImageType, ImageType, FieldType, MaskType>;

int failures = 0;

void
Check(bool condition, const std::string & what)
{
  std::cout << (condition ? "  ok    " : "  FAIL  ") << what << std::endl;
  if (!condition)
  {
    ++failures;
  }
}

bool
Exists(const std::string & path)
{
  return std::ifstream(path).good();
}

template <typename TImage>
typename TImage::Pointer
Read(const std::string & path)
{
  auto reader = itk::ImageFileReader<TImage>::New();
  reader->SetFileName(path);
  reader->Update();
  return reader->GetOutput();
}

itk::Transform<double, 3, 3>::ConstPointer
ReadTransform(const std::string & path)
{
  auto reader = itk::TransformFileReaderTemplate<double>::New();
  reader->SetFileName(path);
  reader->Update();
  const auto * list = reader->GetTransformList();
  if (list->size() != 1)
  {
    throw std::runtime_error(path + " must hold one transform");
  }
  auto * transform = dynamic_cast<itk::Transform<double, 3, 3> *>(list->front().GetPointer());
  if (transform == nullptr)
  {
    throw std::runtime_error(path + " does not hold a 3-D transform");
  }
  return transform;
}

// working_grid.txt: "size X Y Z" / "spacing ..." / "origin ..." lines written by Python
std::map<std::string, std::vector<double>>
ReadGridFile(const std::string & path)
{
  std::map<std::string, std::vector<double>> out;
  std::ifstream                              file(path);
  std::string                                line;
  while (std::getline(file, line))
  {
    std::istringstream words(line);
    std::string        key;
    words >> key;
    double value;
    while (words >> value)
    {
      out[key].push_back(value);
    }
  }
  return out;
}

// Runs the filter on a case folder; returns nullptr (and counts a failure) on an exception.
FilterType::Pointer
Register(const std::string & dir, const std::string & package)
{
  auto filter = FilterType::New();
  filter->SetSolverPackageFileName(package);
  filter->SetFixedImage(Read<ImageType>(dir + "/fixed.mha"));
  filter->SetMovingImage(Read<ImageType>(dir + "/moving.mha"));
  if (Exists(dir + "/initial.h5"))
  {
    filter->SetInitialTransform(ReadTransform(dir + "/initial.h5"));
  }
  if (Exists(dir + "/fixed_mask.mha"))
  {
    filter->SetFixedMask(Read<MaskType>(dir + "/fixed_mask.mha"));
  }
  filter->Update();
  return filter;
}

int
Compare(const std::string & dir, const std::string & package, double toleranceMM)
{
  std::cout << "case " << dir << ", package " << package << ", tolerance " << toleranceMM << " mm" << std::endl;
  FilterType::Pointer filter = Register(dir, package);
  if (std::getenv("SAMCONVEX_TEST_WRITE") != nullptr)
  {
    // for diagnosis: what the C++ filter computed
    itk::WriteImage(filter->GetWorkingFixedImage(), dir + "/working_fixed_cxx.mha");
    itk::WriteImage(filter->GetWorkingMovingImage(), dir + "/working_moving_cxx.mha");
    itk::WriteImage(filter->GetOutput(), dir + "/field_cxx.mha");
  }
  const auto &        timings = filter->GetTimings();
  std::cout << "  C++ registration: " << timings.at("total") << " s (resampling " << timings.at("resampling")
            << " s, solver " << timings.at("solver") << " s, output " << timings.at("output") << " s)" << std::endl;

  // the working grid is the Python one
  const auto   grid = ReadGridFile(dir + "/working_grid.txt");
  const auto * working = filter->GetWorkingFixedImage();
  const auto   size = working->GetLargestPossibleRegion().GetSize();
  bool         sameGrid = grid.at("size").size() == 3;
  double       originError = 0.0;
  for (unsigned int a = 0; a < 3 && sameGrid; ++a)
  {
    sameGrid = sameGrid && static_cast<double>(size[a]) == grid.at("size")[a] &&
               std::abs(working->GetSpacing()[a] - grid.at("spacing")[a]) < 1e-6;
    originError = std::max(originError, std::abs(working->GetOrigin()[a] - grid.at("origin")[a]));
  }
  std::cout << "  working grid " << size[0] << " x " << size[1] << " x " << size[2] << " at "
            << working->GetSpacing()[0] << " mm" << std::endl;
  Check(sameGrid && originError < 1e-4, "working grid (size, spacing, origin) equals the Python one");

  // the output is on the fixed grid
  auto        reference = Read<FieldType>(dir + "/field_python.mha");
  const auto * field = filter->GetOutput();
  bool         sameOutputGrid = field->GetLargestPossibleRegion() == reference->GetLargestPossibleRegion();
  for (unsigned int a = 0; a < 3; ++a)
  {
    sameOutputGrid = sameOutputGrid && std::abs(field->GetSpacing()[a] - reference->GetSpacing()[a]) < 1e-6 &&
                     std::abs(field->GetOrigin()[a] - reference->GetOrigin()[a]) < 1e-4;
  }
  sameOutputGrid = sameOutputGrid && field->GetDirection() == reference->GetDirection();
  Check(sameOutputGrid, "output field is on the fixed image's grid");
  if (!sameOutputGrid)
  {
    return EXIT_FAILURE;
  }

  // field difference, vector norm in mm
  std::vector<double> diff;
  double              largest = 0.0;
  itk::ImageRegionConstIterator<FieldType> it(field, field->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<FieldType> ref(reference, reference->GetLargestPossibleRegion());
  for (; !it.IsAtEnd(); ++it, ++ref)
  {
    diff.push_back((it.Get() - ref.Get()).GetNorm());
    largest = std::max(largest, static_cast<double>(ref.Get().GetNorm()));
  }
  std::sort(diff.begin(), diff.end());
  double mean = 0.0;
  for (double d : diff)
  {
    mean += d;
  }
  mean /= static_cast<double>(diff.size());
  const double p99 = diff[static_cast<size_t>(0.99 * static_cast<double>(diff.size() - 1))];
  std::cout << "  |C++ - Python| over " << diff.size() << " voxels: max " << diff.back() << " mm, 99th percentile "
            << p99 << " mm, mean " << mean << " mm (largest Python displacement " << largest << " mm)" << std::endl;
  Check(largest > 1.0, "the Python field is not trivial (some displacement above 1 mm)");
  Check(diff.back() <= toleranceMM, "max |C++ field - Python field| <= tolerance");

  // GetTransform() is the output field as a DisplacementFieldTransform
  auto *     transform = filter->GetTransform();
  double     transformError = 0.0;
  const auto region = field->GetLargestPossibleRegion();
  for (unsigned int n = 0; n < 5; ++n)
  {
    FieldType::IndexType index;
    for (unsigned int a = 0; a < 3; ++a)
    {
      index[a] = static_cast<itk::IndexValueType>((n * 7 + 3 * a) % region.GetSize(a));
    }
    FieldType::PointType x;
    field->TransformIndexToPhysicalPoint(index, x);
    const auto mapped = transform->TransformPoint(x);
    for (unsigned int a = 0; a < 3; ++a)
    {
      transformError = std::max(transformError, std::abs(mapped[a] - x[a] - field->GetPixel(index)[a]));
    }
  }
  Check(transformError < 1e-4, "GetTransform()->TransformPoint(x) == x + field(x) at voxel centres");

  // the deformable part and the initial transform compose to the output
  const auto * deformable = filter->GetDeformableField();
  const auto * initial = filter->GetInitialTransform();
  double       compositionError = 0.0;
  itk::ImageRegionConstIterator<FieldType> u(deformable, region);
  for (it.GoToBegin(); !it.IsAtEnd(); ++it, ++u)
  {
    FieldType::PointType x;
    field->TransformIndexToPhysicalPoint(it.GetIndex(), x);
    auto moved = x;
    for (unsigned int a = 0; a < 3; ++a)
    {
      moved[a] += u.Get()[a];
    }
    if (initial != nullptr)
    {
      moved = initial->TransformPoint(moved);
    }
    for (unsigned int a = 0; a < 3; ++a)
    {
      compositionError = std::max(compositionError, std::abs(moved[a] - x[a] - it.Get()[a]));
    }
  }
  Check(compositionError < 1e-3,
        initial != nullptr ? "output = A(x + u(x)) - x with the deformable field u"
                           : "output equals the deformable field (no initial transform)");
  std::cout << (failures ? "FAILED" : "PASSED") << std::endl;
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

// Expects `run` to throw an itk::ExceptionObject whose description contains `needle`.
template <typename TFunction>
void
ExpectError(const std::string & what, const std::string & needle, TFunction run)
{
  try
  {
    run();
  }
  catch (const itk::ExceptionObject & error)
  {
    const std::string message = error.GetDescription();
    const bool        found = message.find(needle) != std::string::npos;
    Check(found, what + ": \"" + needle + "\"");
    if (!found)
    {
      std::cout << "        message was: " << message << std::endl;
    }
    return;
  }
  catch (const std::exception & error)
  {
    Check(false, what + ": threw a non-ITK exception: " + error.what());
    return;
  }
  Check(false, what + ": no exception");
}

ImageType::Pointer
Cube(unsigned int n, double spacing, float value)
{
  auto                  image = ImageType::New();
  ImageType::RegionType region;
  region.SetSize({ { n, n, n } });
  image->SetRegions(region);
  ImageType::SpacingType sp;
  sp.Fill(spacing);
  image->SetSpacing(sp);
  image->Allocate();
  image->FillBuffer(value);
  return image;
}

int
Errors(const std::string & dir, const std::string & package)
{
  auto fixed = Read<ImageType>(dir + "/fixed.mha");
  auto moving = Read<ImageType>(dir + "/moving.mha");

  ExpectError("no package", "SetSolverPackageFileName", [&] {
    auto filter = FilterType::New();
    filter->SetFixedImage(fixed);
    filter->SetMovingImage(moving);
    filter->Update();
  });
  ExpectError("missing package file", "does not exist or cannot be read", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(dir + "/no_such_solver.pt2");
    filter->LoadSolverPackage();
  });
  ExpectError("an image as the package", "samconvex export --out", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(dir + "/fixed.mha");
    filter->LoadSolverPackage();
  });
  ExpectError("CPU package on CUDA", "was exported for cpu and cannot run on cuda", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetDevice("cuda");
    filter->LoadSolverPackage();
  });
  ExpectError("unknown device", "is not understood", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetDevice("tpu");
    filter->LoadSolverPackage();
  });
  ExpectError("missing moving image", "MovingImage", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(fixed);
    filter->Update();
  });
  ExpectError("negative working spacing", "must be a positive number of mm", [&] {
    auto filter = FilterType::New();
    filter->SetWorkingSpacing(-2.0);
  });
  ExpectError("tiny voxel budget", "use 0 (no limit) or at least 4096", [&] {
    auto filter = FilterType::New();
    filter->SetMaximumWorkingVoxels(100);
  });
  ExpectError("field of view too small for the package", "accepts multiples of 8 between 40 and", [&] {
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(Cube(20, 2.0, 0.0f));
    filter->SetMovingImage(Cube(20, 2.0, 0.0f));
    filter->Update();
  });
  ExpectError("NaN in the fixed image", "1 NaN or infinite voxel values", [&] {
    auto bad = Cube(48, 2.0, 0.0f);
    bad->SetPixel({ { 3, 4, 5 } }, std::nanf(""));
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(bad);
    filter->SetMovingImage(moving);
    filter->Update();
  });
  ExpectError("no overlap", "does not overlap the fixed image", [&] {
    auto far = Cube(48, 2.0, 0.0f);
    ImageType::PointType origin;
    origin.Fill(5000.0);
    far->SetOrigin(origin);
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(Cube(48, 2.0, 0.0f));
    filter->SetMovingImage(far);
    filter->SetCropToForeground(false);
    filter->Update();
  });
  ExpectError("mask off its image's grid", "is not on the grid of the fixed image", [&] {
    auto mask = MaskType::New();
    mask->CopyInformation(fixed);
    mask->SetRegions(fixed->GetLargestPossibleRegion());
    auto origin = fixed->GetOrigin();
    origin[0] += 1.0;
    mask->SetOrigin(origin);
    mask->Allocate();
    mask->FillBuffer(1);
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(fixed);
    filter->SetMovingImage(moving);
    filter->SetFixedMask(mask);
    filter->Update();
  });
  ExpectError("empty mask", "is empty (no non-zero voxel)", [&] {
    auto mask = MaskType::New();
    mask->CopyInformation(moving);
    mask->SetRegions(moving->GetLargestPossibleRegion());
    mask->Allocate();
    mask->FillBuffer(0);
    auto filter = FilterType::New();
    filter->SetSolverPackageFileName(package);
    filter->SetFixedImage(fixed);
    filter->SetMovingImage(moving);
    filter->SetMovingMask(mask);
    filter->Update();
  });
  ExpectError("GetTransform before Update", "call Update() first", [&] {
    auto filter = FilterType::New();
    filter->GetTransform();
  });

  // metadata and parameter defaults come from the package
  auto filter = FilterType::New();
  filter->SetSolverPackageFileName(package);
  filter->LoadSolverPackage();
  const auto & meta = filter->GetSolverMetadata();
  Check(meta.count("samconvex.format") && meta.at("samconvex.format") == "1", "package metadata: samconvex.format 1");
  Check(filter->GetSolverConfiguration().find("\"levels\"") != std::string::npos,
        "GetSolverConfiguration() holds the solver parameters (JSON)");
  Check(std::abs(filter->GetWorkingSpacing() - std::stod(meta.at("samconvex.grid.working_spacing_mm"))) < 1e-12,
        "working spacing defaults to the package's value");
  filter->SetWorkingSpacing(3.0);
  Check(filter->GetWorkingSpacing() == 3.0, "SetWorkingSpacing overrides the package's value");
  std::cout << (failures ? "FAILED" : "PASSED") << std::endl;
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
} // namespace

int
main(int argc, char * argv[])
{
  RegisterIOFactories();
  const std::string usage = "usage: itkSAMConvexRegistrationFilterTest compare CASE_DIR PACKAGE TOLERANCE_MM\n"
                            "       itkSAMConvexRegistrationFilterTest errors CASE_DIR PACKAGE";
  if (argc < 4)
  {
    std::cerr << usage << std::endl;
    return EXIT_FAILURE;
  }
  const std::string mode = argv[1];
  try
  {
    if (mode == "compare" && argc == 5)
    {
      return Compare(argv[2], argv[3], std::stod(argv[4]));
    }
    if (mode == "errors" && argc == 4)
    {
      return Errors(argv[2], argv[3]);
    }
  }
  catch (const std::exception & error)
  {
    std::cerr << "unexpected exception: " << error.what() << std::endl;
    return EXIT_FAILURE;
  }
  std::cerr << usage << std::endl;
  return EXIT_FAILURE;
}
