// NIfTI-1 / NIfTI-2 reader and writer over zlib's gz* API (which also reads uncompressed files transparently).
// Geometry follows nibabel (the reference of nnU-Net's NibabelIO): the header fixes nibabel applies on load
// (negative pixdim -> abs, zero pixdim -> 1, qfac not +-1 -> 1, unknown xform codes -> 0) are applied before
// the affine is computed; get_best_affine = sform if sform_code != 0, else qform if qform_code != 0, else the
// "base" affine (x flipped, centred on the volume).
#include "pipeline/seg/nifti.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unistd.h>

namespace kiln::seg {
namespace {

[[noreturn]] void bad(const std::string& path, const std::string& msg) {
  seg_fail(ErrorCode::InvalidArgument, "NIfTI file '" + path + "': " + msg);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A gz stream (or a plain file read through gzread) with exact-size reads.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) seg_fail(ErrorCode::IoError, "cannot open NIfTI file '" + path + "': " + std::strerror(errno));
    gzbuffer(f_, 1 << 18);
  }
  ~GzReader() {
    if (f_) gzclose(f_);
  }
  // Reads up to n bytes; returns how many were read (fewer only at the end of the data). Errors of the
  // compressed stream (corrupt or truncated .gz) throw.
  size_t read(void* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = (unsigned)std::min<size_t>(n - done, 1u << 30);
      int r = gzread(f_, static_cast<char*>(dst) + done, chunk);
      if (r < 0) {
        int err = 0;
        const char* msg = gzerror(f_, &err);
        bad(path_, std::string("corrupt compressed data (") + (msg ? msg : "zlib error") + ")");
      }
      if (r == 0) break;
      done += (size_t)r;
    }
    if (done < n) {
      int err = 0;
      const char* msg = gzerror(f_, &err);
      if (err != Z_OK && err != Z_STREAM_END)
        bad(path_, std::string("truncated or corrupt compressed data (") + (msg ? msg : "zlib error") + ")");
    }
    return done;
  }
  void skip(size_t n) {
    std::vector<char> buf(std::min<size_t>(n, 1 << 16));
    while (n > 0) {
      size_t want = std::min(n, buf.size());
      size_t got = read(buf.data(), want);
      if (got < want) bad(path_, "file ends inside the header extensions (before vox_offset)");
      n -= got;
    }
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

// Little helper reading header fields in the file's byte order.
struct Fields {
  const unsigned char* p;
  bool swap;
  template <class T> T get(size_t off) const {
    unsigned char b[sizeof(T)];
    std::memcpy(b, p + off, sizeof(T));
    if (swap) std::reverse(b, b + sizeof(T));
    T v;
    std::memcpy(&v, b, sizeof(T));
    return v;
  }
};

int dtype_bytes(int code) {
  switch (code) {
    case 2: case 256: return 1;     // uint8, int8
    case 4: case 512: return 2;     // int16, uint16
    case 8: case 768: case 16: return 4;  // int32, uint32, float32
    case 1024: case 1280: case 64: return 8;  // int64, uint64, float64
    default: return 0;
  }
}

const char* dtype_label(int code) {
  switch (code) {
    case 1: return "binary (1 bit)";
    case 32: return "complex64";
    case 128: return "RGB24";
    case 1536: return "float128";
    case 1792: return "complex128";
    case 2048: return "complex256";
    case 2304: return "RGBA32";
    case 1280: return "uint64";
    default: return "unknown";
  }
}

template <class T>
void convert(const unsigned char* src, bool swap, int64_t n, float* dst, bool scale, double slope, double inter) {
  for (int64_t idx = 0; idx < n; ++idx) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, src + idx * sizeof(T), sizeof(T));
    if (swap) std::reverse(b, b + sizeof(T));
    T v;
    std::memcpy(&v, b, sizeof(T));
    dst[idx] = scale ? (float)((double)v * slope + inter) : (float)v;
  }
}

// nibabel's quat2mat.
void quat_to_mat(double w, double x, double y, double z, double R[3][3]) {
  double nq = w * w + x * x + y * y + z * z;
  if (nq < std::numeric_limits<double>::epsilon()) {
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) R[r][c] = r == c ? 1.0 : 0.0;
    return;
  }
  double s = 2.0 / nq;
  double X = x * s, Y = y * s, Z = z * s;
  double wX = w * X, wY = w * Y, wZ = w * Z, xX = x * X, xY = x * Y, xZ = x * Z, yY = y * Y, yZ = y * Z, zZ = z * Z;
  double m[3][3] = {{1.0 - (yY + zZ), xY - wZ, xZ + wY}, {xY + wZ, 1.0 - (xX + zZ), yZ - wX}, {xZ - wY, yZ + wX, 1.0 - (xX + yY)}};
  std::memcpy(R, m, sizeof(m));
}

}  // namespace

NiftiImage read_nifti(const std::string& path, bool allow_2d) {
  GzReader in(path);
  unsigned char hdr[540];
  size_t got = in.read(hdr, 348);
  if (got < 348) bad(path, "truncated: " + std::to_string(got) + " bytes, a NIfTI header needs at least 348");
  int32_t szle;
  std::memcpy(&szle, hdr, 4);
  int32_t szbe = (int32_t)__builtin_bswap32((uint32_t)szle);
  bool v2 = false, swap = false;
  if (szle == 348) {
  } else if (szbe == 348) {
    swap = true;
  } else if (szle == 540) {
    v2 = true;
  } else if (szbe == 540) {
    v2 = swap = true;
  } else {
    bad(path, "not a NIfTI file (bad magic: sizeof_hdr is " + std::to_string(szle) + ", expected 348 or 540)");
  }
  const size_t hsize = v2 ? 540 : 348;
  if (v2) {
    got = in.read(hdr + 348, 540 - 348);
    if (got < 540 - 348) bad(path, "truncated: the NIfTI-2 header needs 540 bytes");
  }
  Fields F{hdr, swap};
  // magic
  if (!v2) {
    if (std::memcmp(hdr + 344, "ni1\0", 4) == 0)
      bad(path, "is the header of a NIfTI-1 pair (.hdr/.img); only single-file .nii / .nii.gz are supported");
    if (std::memcmp(hdr + 344, "n+1\0", 4) != 0) bad(path, "bad magic (expected \"n+1\" at byte 344)");
  } else {
    if (std::memcmp(hdr + 4, "ni2\0", 4) == 0)
      bad(path, "is the header of a NIfTI-2 pair (.hdr/.img); only single-file .nii / .nii.gz are supported");
    if (std::memcmp(hdr + 4, "n+2\0\r\n\032\n", 8) != 0) bad(path, "bad magic (expected \"n+2\\0\\r\\n\\032\\n\" at byte 4)");
  }

  // dims, datatype, pixdim, offsets, scaling, transforms
  int64_t dim[8];
  double pixdim[8];
  int datatype;
  double vox_offset, slope, inter, quat[3], qoff[3], srow[3][4];
  int qform_code, sform_code;
  if (!v2) {
    for (int d = 0; d < 8; ++d) dim[d] = F.get<int16_t>(40 + 2 * d);
    datatype = F.get<int16_t>(70);
    for (int d = 0; d < 8; ++d) pixdim[d] = F.get<float>(76 + 4 * d);
    vox_offset = F.get<float>(108);
    slope = F.get<float>(112);
    inter = F.get<float>(116);
    qform_code = F.get<int16_t>(252);
    sform_code = F.get<int16_t>(254);
    for (int q = 0; q < 3; ++q) quat[q] = F.get<float>(256 + 4 * q);
    for (int q = 0; q < 3; ++q) qoff[q] = F.get<float>(268 + 4 * q);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) srow[r][c] = F.get<float>(280 + 16 * r + 4 * c);
  } else {
    datatype = F.get<int16_t>(12);
    for (int d = 0; d < 8; ++d) dim[d] = F.get<int64_t>(16 + 8 * d);
    for (int d = 0; d < 8; ++d) pixdim[d] = F.get<double>(104 + 8 * d);
    vox_offset = (double)F.get<int64_t>(168);
    slope = F.get<double>(176);
    inter = F.get<double>(184);
    qform_code = F.get<int32_t>(344);
    sform_code = F.get<int32_t>(348);
    for (int q = 0; q < 3; ++q) quat[q] = F.get<double>(352 + 8 * q);
    for (int q = 0; q < 3; ++q) qoff[q] = F.get<double>(376 + 8 * q);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) srow[r][c] = F.get<double>(400 + 32 * r + 8 * c);
  }

  const int64_t ndim = dim[0];
  if (ndim < 1 || ndim > 7) bad(path, "dim[0] = " + std::to_string(ndim) + " is not in 1..7");
  if (ndim < 3 && !(ndim == 2 && allow_2d))
    bad(path, "is a " + std::to_string(ndim) + "-D image; only 3-D images are supported" +
                  std::string(ndim == 2 ? " here (2-D images are read for models whose plans use SimpleITKIO)" : ""));
  for (int d = 1; d <= ndim; ++d)
    if (dim[d] < 1) bad(path, "dim[" + std::to_string(d) + "] = " + std::to_string(dim[d]) + " is not positive");
  for (int d = 4; d <= ndim; ++d)
    if (dim[d] != 1)
      bad(path, "is a " + std::to_string(ndim) + "-D image with dim[" + std::to_string(d) + "] = " + std::to_string(dim[d]) +
                    " (several volumes); only 3-D images (or 4-D with one volume) are supported");
  const int bytes = dtype_bytes(datatype);
  if (bytes == 0 || datatype == 1280)
    bad(path, "unsupported datatype " + std::to_string(datatype) + " (" + dtype_label(datatype) +
                  "); supported: uint8, int8, int16, uint16, int32, uint32, int64, float32, float64");
  if (ndim == 2) {  // one slice: the unused third axis has length 1 whatever the header holds there
    dim[3] = 1;
    if (!std::isfinite(pixdim[3])) pixdim[3] = 1.0;
  }
  const int64_t ni = dim[1], nj = dim[2], nk = dim[3];
  const int64_t kMaxVoxels = int64_t(1) << 36;
  if (ni > kMaxVoxels || nj > kMaxVoxels / ni || nk > kMaxVoxels / (ni * nj))  // no overflow: each step is bounded
    bad(path, "image of " + std::to_string(ni) + " x " + std::to_string(nj) + " x " + std::to_string(nk) + " voxels is too large");
  const int64_t n = ni * nj * nk;

  // vox_offset: 0 means "right after the header" (nibabel writes 352 there); otherwise at least that far.
  const double min_offset = (double)hsize + 4;
  if (!std::isfinite(vox_offset) || vox_offset < 0 || vox_offset != std::floor(vox_offset) || vox_offset > 1e12)
    bad(path, "invalid vox_offset " + std::to_string(vox_offset));
  if (vox_offset == 0) vox_offset = min_offset;
  if (vox_offset < min_offset)
    bad(path, "vox_offset " + std::to_string((int64_t)vox_offset) + " lies inside the header (must be >= " +
                  std::to_string((int64_t)min_offset) + ")");

  // scaling as nibabel: none when slope is 0 or not finite; a valid slope needs a finite intercept.
  bool scale = false;
  if (slope != 0 && std::isfinite(slope)) {
    if (!std::isfinite(inter)) bad(path, "valid scl_slope but invalid scl_inter " + std::to_string(inter));
    scale = !(slope == 1.0 && inter == 0.0);
  }

  // header fixes nibabel applies on load
  for (int d = 1; d <= 3; ++d) {
    if (pixdim[d] == 0) pixdim[d] = 1.0;
    if (pixdim[d] < 0) pixdim[d] = -pixdim[d];
  }
  if (std::isnan(pixdim[1]) || std::isnan(pixdim[2]) || std::isnan(pixdim[3])) bad(path, "pixdim[1..3] contains NaN");
  const double qfac = pixdim[0] == -1.0 ? -1.0 : 1.0;
  if (qform_code < 0 || qform_code > 5) qform_code = 0;
  if (sform_code < 0 || sform_code > 5) sform_code = 0;

  NiftiImage img;
  img.path = path;
  img.stored_datatype = datatype;
  img.spatial_dims = ndim == 2 ? 2 : 3;
  img.header.assign(reinterpret_cast<const char*>(hdr), hsize);
  img.spacing = {pixdim[3], pixdim[2], pixdim[1]};
  auto& A = img.affine;
  A.fill(0.0);
  A[15] = 1.0;
  if (sform_code != 0) {
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) A[r * 4 + c] = srow[r][c];
  } else if (qform_code != 0) {
    long double b = quat[0], c = quat[1], d = quat[2];
    long double w2 = 1.0L - (b * b + c * c + d * d);
    const double thresh = v2 ? -3 * std::numeric_limits<double>::epsilon() : -3 * (double)std::numeric_limits<float>::epsilon();
    double w;
    if (w2 < 0) {
      if (w2 < thresh) bad(path, "invalid qform quaternion (b^2 + c^2 + d^2 > 1)");
      w = 0;
    } else {
      w = (double)std::sqrt(w2);
    }
    double R[3][3];
    quat_to_mat(w, quat[0], quat[1], quat[2], R);
    const double vox[3] = {pixdim[1], pixdim[2], pixdim[3] * qfac};
    for (int r = 0; r < 3; ++r) {
      for (int col = 0; col < 3; ++col) A[r * 4 + col] = R[r][col] * vox[col];
      A[r * 4 + 3] = qoff[r];
    }
  } else {
    const int64_t shp[3] = {ni, nj, nk};
    for (int d = 0; d < 3; ++d) {
      const double zoom = d == 0 ? -pixdim[1] : pixdim[d + 1];
      A[d * 4 + d] = zoom;
      A[d * 4 + 3] = -((double)(shp[d] - 1) / 2.0) * zoom;
    }
  }

  // data
  const size_t pos = hsize;
  in.skip((size_t)vox_offset - pos);
  const size_t nbytes = (size_t)n * (size_t)bytes;
  // Read in chunks so that a header claiming a huge image over a short (or compressed) file fails as
  // "truncated" before anything of the claimed size is allocated.
  const size_t kChunk = size_t(1) << 24;  // a multiple of every element size
  std::vector<std::vector<unsigned char>> chunks;
  size_t total = 0;
  while (total < nbytes) {
    const size_t want = std::min(kChunk, nbytes - total);
    chunks.emplace_back(want);
    got = in.read(chunks.back().data(), want);
    total += got;
    if (got < want)
      bad(path, "truncated: expected " + std::to_string(nbytes) + " bytes of voxel data after vox_offset " +
                    std::to_string((int64_t)vox_offset) + ", found " + std::to_string(total));
  }
  img.data = Tensor(DType::Float32, {nk, nj, ni});  // file order (i fastest) == row-major [k][j][i]
  float* dst = img.data.data<float>();
  for (const auto& ch : chunks) {
    const unsigned char* src = ch.data();
    const int64_t m = (int64_t)(ch.size() / (size_t)bytes);
    switch (datatype) {
      case 2: convert<uint8_t>(src, swap, m, dst, scale, slope, inter); break;
      case 256: convert<int8_t>(src, swap, m, dst, scale, slope, inter); break;
      case 4: convert<int16_t>(src, swap, m, dst, scale, slope, inter); break;
      case 512: convert<uint16_t>(src, swap, m, dst, scale, slope, inter); break;
      case 8: convert<int32_t>(src, swap, m, dst, scale, slope, inter); break;
      case 768: convert<uint32_t>(src, swap, m, dst, scale, slope, inter); break;
      case 1024: convert<int64_t>(src, swap, m, dst, scale, slope, inter); break;
      case 16: convert<float>(src, swap, m, dst, scale, slope, inter); break;
      case 64: convert<double>(src, swap, m, dst, scale, slope, inter); break;
      default: bad(path, "unsupported datatype " + std::to_string(datatype));
    }
    dst += m;
  }
  return img;
}

namespace {

void put_bytes(std::string& h, size_t off, const void* v, size_t n) { std::memcpy(&h[off], v, n); }
template <class T> void put(std::string& h, size_t off, T v) { put_bytes(h, off, &v, sizeof(T)); }

// Nearest orthogonal matrix (polar factor) by Newton iteration X <- (X + X^-T) / 2; equals U V^T of the SVD
// that nibabel's set_qform uses.
bool orthogonalize(double R[3][3]) {
  for (int it = 0; it < 100; ++it) {
    double (*m)[3] = R;
    double cof[3][3];
    cof[0][0] = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    cof[0][1] = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    cof[0][2] = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    cof[1][0] = m[0][2] * m[2][1] - m[0][1] * m[2][2];
    cof[1][1] = m[0][0] * m[2][2] - m[0][2] * m[2][0];
    cof[1][2] = m[0][1] * m[2][0] - m[0][0] * m[2][1];
    cof[2][0] = m[0][1] * m[1][2] - m[0][2] * m[1][1];
    cof[2][1] = m[0][2] * m[1][0] - m[0][0] * m[1][2];
    cof[2][2] = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    double det = m[0][0] * cof[0][0] + m[0][1] * cof[0][1] + m[0][2] * cof[0][2];
    if (!std::isfinite(det) || std::fabs(det) < 1e-12) return false;
    double change = 0;
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) {
        double nv = 0.5 * (m[r][c] + cof[r][c] / det);  // inverse transpose = cofactor / det
        change = std::max(change, std::fabs(nv - m[r][c]));
        m[r][c] = nv;
      }
    if (change < 1e-15) return true;
  }
  return true;
}

// Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method).
void mat_to_quat(const double R[3][3], double q[4]) {
  double tr = R[0][0] + R[1][1] + R[2][2];
  if (tr > 0) {
    double s = std::sqrt(tr + 1.0) * 2;
    q[0] = 0.25 * s;
    q[1] = (R[2][1] - R[1][2]) / s;
    q[2] = (R[0][2] - R[2][0]) / s;
    q[3] = (R[1][0] - R[0][1]) / s;
  } else if (R[0][0] > R[1][1] && R[0][0] > R[2][2]) {
    double s = std::sqrt(1.0 + R[0][0] - R[1][1] - R[2][2]) * 2;
    q[0] = (R[2][1] - R[1][2]) / s;
    q[1] = 0.25 * s;
    q[2] = (R[0][1] + R[1][0]) / s;
    q[3] = (R[0][2] + R[2][0]) / s;
  } else if (R[1][1] > R[2][2]) {
    double s = std::sqrt(1.0 + R[1][1] - R[0][0] - R[2][2]) * 2;
    q[0] = (R[0][2] - R[2][0]) / s;
    q[1] = (R[0][1] + R[1][0]) / s;
    q[2] = 0.25 * s;
    q[3] = (R[1][2] + R[2][1]) / s;
  } else {
    double s = std::sqrt(1.0 + R[2][2] - R[0][0] - R[1][1]) * 2;
    q[0] = (R[1][0] - R[0][1]) / s;
    q[1] = (R[0][2] + R[2][0]) / s;
    q[2] = (R[1][2] + R[2][1]) / s;
    q[3] = 0.25 * s;
  }
  double norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  for (int i = 0; i < 4; ++i) q[i] /= norm;
  if (q[0] < 0)
    for (int i = 0; i < 4; ++i) q[i] = -q[i];
}

// The 352 bytes nibabel writes for Nifti1Image(array, affine) (header + empty extension flag).
std::string make_header(const Tensor& t, int datatype, int bitpix, const std::array<double, 16>& A, int spatial_dims = 3) {
  std::string h(352, '\0');
  put<int32_t>(h, 0, 348);
  const int16_t dims[8] = {(int16_t)spatial_dims, (int16_t)t.dim(2), (int16_t)t.dim(1), (int16_t)t.dim(0), 1, 1, 1, 1};
  put_bytes(h, 40, dims, sizeof(dims));
  put<int16_t>(h, 70, (int16_t)datatype);
  put<int16_t>(h, 72, (int16_t)bitpix);
  // qform parameters from the affine (nibabel set_qform, code 0) and sform (code 2)
  double zooms[3], R[3][3];
  for (int c = 0; c < 3; ++c) {
    double ss = 0;
    for (int r = 0; r < 3; ++r) ss += A[r * 4 + c] * A[r * 4 + c];
    zooms[c] = std::sqrt(ss);
    for (int r = 0; r < 3; ++r) R[r][c] = zooms[c] != 0 ? A[r * 4 + c] / zooms[c] : A[r * 4 + c];
  }
  double det = R[0][0] * (R[1][1] * R[2][2] - R[1][2] * R[2][1]) - R[0][1] * (R[1][0] * R[2][2] - R[1][2] * R[2][0]) +
               R[0][2] * (R[1][0] * R[2][1] - R[1][1] * R[2][0]);
  double qfac = 1;
  if (!(det > 0)) {
    qfac = -1;
    for (int r = 0; r < 3; ++r) R[r][2] = -R[r][2];
  }
  double q[4] = {1, 0, 0, 0};
  if (orthogonalize(R)) mat_to_quat(R, q);
  float pixdim[8] = {(float)qfac, (float)zooms[0], (float)zooms[1], (float)zooms[2], 1, 1, 1, 1};
  put_bytes(h, 76, pixdim, sizeof(pixdim));
  put<float>(h, 108, 352.0f);
  put<float>(h, 112, 1.0f);  // scl_slope / scl_inter: no scaling
  put<float>(h, 116, 0.0f);
  put<int16_t>(h, 252, 0);  // qform_code unknown
  put<int16_t>(h, 254, 2);  // sform_code aligned
  for (int i = 0; i < 3; ++i) put<float>(h, 256 + 4 * i, (float)q[i + 1]);
  for (int i = 0; i < 3; ++i) put<float>(h, 268 + 4 * i, (float)A[i * 4 + 3]);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) put<float>(h, 280 + 16 * r + 4 * c, (float)A[r * 4 + c]);
  std::memcpy(&h[344], "n+1\0", 4);
  return h;
}

void write_atomic(const std::string& path, const std::string& header, const void* data, size_t nbytes) {
  static std::atomic<unsigned> counter{0};
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::string tmp_name = ".";  // hidden, same directory (rename stays on one file system)
  tmp_name += target.filename().string();
  tmp_name += ".tmp" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  const std::string tmp = (target.parent_path() / tmp_name).string();
  const bool gz = ends_with(path, ".gz");
  auto fail_io = [&](const std::string& what) {
    std::error_code ec;
    fs::remove(tmp, ec);
    seg_fail(ErrorCode::IoError, "cannot write NIfTI file '" + path + "': " + what);
  };
  if (gz) {
    gzFile f = gzopen(tmp.c_str(), "wb1");  // nibabel's default compression level
    if (!f) fail_io(std::strerror(errno));
    gzbuffer(f, 1 << 18);
    bool ok = gzwrite(f, header.data(), (unsigned)header.size()) == (int)header.size();
    size_t done = 0;
    while (ok && done < nbytes) {
      unsigned chunk = (unsigned)std::min<size_t>(nbytes - done, 1u << 30);
      ok = gzwrite(f, static_cast<const char*>(data) + done, chunk) == (int)chunk;
      done += chunk;
    }
    if (gzclose(f) != Z_OK) ok = false;
    if (!ok) fail_io("write error (disk full?)");
  } else {
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail_io(std::strerror(errno));
    bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
    ok = ok && (nbytes == 0 || std::fwrite(data, 1, nbytes, f) == nbytes);
    if (std::fclose(f) != 0) ok = false;
    if (!ok) fail_io("write error (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) fail_io("rename of the temporary file failed: " + ec.message());
}

void check_volume(const std::string& path, const Tensor& t) {
  if (t.rank() != 3)
    seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI file '" + path + "': expected a 3-D volume (k, j, i), got shape " +
                                             shape_str(t.shape()));
  for (int d = 0; d < 3; ++d)
    if (t.dim(d) < 1 || t.dim(d) > 32767)
      seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI file '" + path + "': dimension " + std::to_string(t.dim(d)) +
                                               " is outside 1..32767 (NIfTI-1 limit)");
}

}  // namespace

void write_nifti_labels(const std::string& path, const Tensor& labels, const std::array<double, 16>& affine,
                        int spatial_dims) {
  check_volume(path, labels);
  if (spatial_dims != 2 && spatial_dims != 3)
    seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI label map '" + path + "': spatial_dims must be 2 or 3, got " +
                                             std::to_string(spatial_dims));
  if (spatial_dims == 2 && labels.dim(0) != 1)
    seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI label map '" + path + "' as a 2-D image: it has " +
                                             std::to_string(labels.dim(0)) + " slices (k), expected 1");
  int datatype, bitpix;
  if (labels.dtype() == DType::UInt8) {
    datatype = 2, bitpix = 8;
  } else if (labels.dtype() == DType::UInt16) {
    datatype = 512, bitpix = 16;
  } else {
    seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI label map '" + path + "': expected uint8 or uint16, got " +
                                             dtype_name(labels.dtype()));
  }
  write_atomic(path, make_header(labels, datatype, bitpix, affine, spatial_dims), labels.raw(), labels.nbytes());
}

void write_nifti_float(const std::string& path, const Tensor& data, const std::array<double, 16>& affine) {
  check_volume(path, data);
  if (data.dtype() != DType::Float32)
    seg_fail(ErrorCode::InvalidArgument, "cannot write NIfTI float volume '" + path + "': expected float32, got " +
                                             dtype_name(data.dtype()));
  write_atomic(path, make_header(data, 16, 32, affine), data.raw(), data.nbytes());
}

}  // namespace kiln::seg
