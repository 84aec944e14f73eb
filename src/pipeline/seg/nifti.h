// NIfTI-1 / NIfTI-2 reading and writing (.nii and .nii.gz), own code over zlib.
#pragma once
#include "pipeline/seg/volume.h"

namespace kiln::seg {

struct NiftiImage {
  Tensor data;              // float32, shape (k, j, i) = reader order; scl_slope/scl_inter applied (in double)
  Spacing spacing{};        // reader order: (pixdim[3], pixdim[2], pixdim[1]) as double from the stored float
  std::array<double, 16> affine{};  // 4x4 row-major voxel->world, as nibabel's get_best_affine() (sform, else qform, else pixdim)
  std::string header;       // the raw header bytes as read (348 for NIfTI-1, 540 for NIfTI-2)
  int stored_datatype = 0;  // NIfTI datatype code of the file
  std::string path;
};

// Throws kiln::Error (InvalidArgument) naming the file on any malformed, truncated or unsupported file.
NiftiImage read_nifti(const std::string& path);

// Writes an integer label map `labels` (uint8 or uint16, shape (k, j, i) = reader order) the way nnU-Net's
// NibabelIO does: a fresh NIfTI-1 header with `affine` as the sform (code 2), qform code 0, pixdim from the
// affine's column norms. gzip-compressed if the path ends in .gz. Written atomically (temp file + rename).
void write_nifti_labels(const std::string& path, const Tensor& labels, const std::array<double, 16>& affine);

// Same for float32 volumes (e.g. probability maps), shape (k, j, i).
void write_nifti_float(const std::string& path, const Tensor& data, const std::array<double, 16>& affine);

}  // namespace kiln::seg
