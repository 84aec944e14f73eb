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
  int spatial_dims = 3;     // dim[0] of the file: 3 (also for 4-D files with one volume), or 2 if read with allow_2d
  std::string path;
};

// Throws kiln::Error (InvalidArgument) naming the file on any malformed, truncated or unsupported file.
// A 2-D file (dim[0] = 2) is refused unless `allow_2d`; then it is read as one slice, shape (1, j, i), with
// spacing (pixdim[3] or 1 if unset, pixdim[2], pixdim[1]) and spatial_dims = 2 (the caller decides what the slice
// spacing means: nnU-Net's SimpleITKIO uses 999 * the largest in-plane spacing, NibabelIO refuses such files).
NiftiImage read_nifti(const std::string& path, bool allow_2d = false);

// Writes an integer label map `labels` (uint8 or uint16, shape (k, j, i) = reader order) the way nnU-Net's
// NibabelIO does: a fresh NIfTI-1 header with `affine` as the sform (code 2), qform code 0, pixdim from the
// affine's column norms. gzip-compressed if the path ends in .gz. Written atomically (temp file + rename).
// spatial_dims = 2 writes a 2-D file (dim[0] = 2) of a one-slice map (1, j, i), as SimpleITK writes the
// segmentation of a 2-D input image.
void write_nifti_labels(const std::string& path, const Tensor& labels, const std::array<double, 16>& affine,
                        int spatial_dims = 3);

// Same for float32 volumes (e.g. probability maps), shape (k, j, i).
void write_nifti_float(const std::string& path, const Tensor& data, const std::array<double, 16>& affine);

}  // namespace kiln::seg
