// kiln::seg I/O stages: NIfTI read/write vs nibabel, the pickle reader (real nnU-Net checkpoint and
// postprocessing.pkl, hostile bytes), the model-folder loader, 26-connected components vs skimage and
// nnU-Net's largest-component postprocessing on the reference case.
// References: python/make_seg_io_refs.py -> tests/data/seg/io_*; the reference case in ${KILN_SHARED_DIR}/nnunet-case0.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <unistd.h>

#include "io/npy.h"
#include "kiln/status.h"
#include "pipeline/seg/model_folder.h"
#include "pipeline/seg/nifti.h"
#include "pipeline/seg/pickle.h"
#include "pipeline/seg/postprocess.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::seg;
namespace fs = std::filesystem;
using nlohmann::json;

using namespace kiln::testing_util;

namespace {

const std::string kData = std::string(KILN_SOURCE_DIR) + "/tests/data/seg/";
const std::string kCase = std::string(KILN_SHARED_DIR) + "/nnunet-case0/";
const std::string kModel = kCase + "model/Dataset901_SynthEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres/";

#define SKIP_WITHOUT_CASE()                                                         \
  if (!fs::exists(kCase)) GTEST_SKIP() << "reference case not found at " << kCase

json refs() {
  std::ifstream f(kData + "io_refs.json");
  EXPECT_TRUE(f.good()) << "missing " << kData << "io_refs.json";
  return json::parse(f);
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}

// Decompressed content of a (possibly gzipped) file.
std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << path;
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, (size_t)n);
  gzclose(f);
  return out;
}

std::string gzip_bytes(const std::string& raw) {
  // gzip container via deflateInit2 with windowBits 31
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, raw.size()) + 64, '\0');
  zs.next_in = (Bytef*)raw.data();
  zs.avail_in = (uInt)raw.size();
  zs.next_out = (Bytef*)out.data();
  zs.avail_out = (uInt)out.size();
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Expects `fn` to throw kiln::Error with `code` and a message containing every fragment.
template <class F>
void expect_error(F fn, ErrorCode code, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ((int)e.code(), (int)code) << e.what();
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

// Compares one read image with what nibabel reported (io_refs.json).
void check_against_ref(const NiftiImage& img, const json& r, double affine_tol) {
  const auto& shp = r["shape_kji"];
  ASSERT_EQ(img.data.rank(), 3);
  for (int d = 0; d < 3; ++d) EXPECT_EQ(img.data.dim(d), shp[d].get<int64_t>()) << img.path;
  for (int d = 0; d < 3; ++d) EXPECT_EQ(img.spacing[d], r["spacing"][d].get<double>()) << img.path << " axis " << d;  // float32 -> double: exact
  for (int e = 0; e < 16; ++e) EXPECT_NEAR(img.affine[e], r["affine"][e].get<double>(), affine_tol) << img.path << " affine[" << e << "]";
  EXPECT_EQ(img.stored_datatype, r["datatype"].get<int>());
  const float* p = img.data.data<float>();
  double sum = 0;
  float mn = INFINITY, mx = -INFINITY;
  for (int64_t i = 0; i < img.data.numel(); ++i) {
    sum += p[i];
    mn = std::min(mn, p[i]);
    mx = std::max(mx, p[i]);
  }
  // sum of the float32 values in double: only the summation order differs from numpy's
  EXPECT_NEAR(sum, r["sum"].get<double>(), 1e-9 * std::max(1.0, std::fabs(r["sum"].get<double>())) + 1e-9 * img.data.numel()) << img.path;
  EXPECT_EQ(mn, (float)r["min"].get<double>()) << img.path;
  EXPECT_EQ(mx, (float)r["max"].get<double>()) << img.path;
  const int64_t J = img.data.dim(1), I = img.data.dim(2);
  for (const auto& s : r["samples"]) {
    int64_t k = s[0], j = s[1], i = s[2];
    EXPECT_EQ(p[(k * J + j) * I + i], (float)s[3].get<double>()) << img.path << " at " << k << "," << j << "," << i;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------- NIfTI read

TEST(SegNifti, ReadsReferenceCaseLikeNibabel) {
  SKIP_WITHOUT_CASE();
  json r = refs();
  int n = 0;
  for (auto it = r["files"].begin(); it != r["files"].end(); ++it) {
    if (it.key().rfind("shared:", 0) != 0) continue;
    NiftiImage img = read_nifti(kCase + it.key().substr(7));
    check_against_ref(img, it.value(), 0.0);  // sform float32 -> double: exact
    EXPECT_EQ(img.header.size(), 348u);
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(SegNifti, ReadsCraftedFilesLikeNibabel) {
  // big-endian + scaling, qform with qfac -1, no transform (base affine), negative pixdim, 4-D with one
  // volume, extensions (vox_offset > 352), every integer type, float32 with slope, NIfTI-2 in both byte orders
  json r = refs();
  int n = 0;
  for (auto it = r["files"].begin(); it != r["files"].end(); ++it) {
    if (it.key().rfind("io_small", 0) != 0) continue;
    SCOPED_TRACE(it.key());
    NiftiImage img = read_nifti(kData + it.key());
    // qform: nibabel builds the rotation in float64 from the float32 quaternion, as we do; 1e-12 covers
    // the last-bit differences of sqrt in long double vs numpy's longdouble
    check_against_ref(img, it.value(), 1e-12);
    EXPECT_EQ(img.header.size(), it.key().find("nifti2") != std::string::npos ? 540u : 348u);
    ++n;
  }
  EXPECT_EQ(n, 11);
}

TEST(SegNifti, RejectsMalformedFiles) {
  TempDir tmp;
  const std::string good = read_all(kData + "io_small_ext_u8.nii");
  ASSERT_GT(good.size(), 400u);

  const std::string trunc = tmp / "trunc.nii";
  write_all(trunc, good.substr(0, good.size() - 10));
  expect_error([&] { read_nifti(trunc); }, ErrorCode::InvalidArgument, {trunc, "truncated", "voxel data"});

  const std::string trunc_hdr = tmp / "trunc_hdr.nii";
  write_all(trunc_hdr, good.substr(0, 100));
  expect_error([&] { read_nifti(trunc_hdr); }, ErrorCode::InvalidArgument, {trunc_hdr, "truncated"});

  const std::string trunc_gz = tmp / "trunc.nii.gz";
  const std::string gz = gzip_bytes(good);
  write_all(trunc_gz, gz.substr(0, gz.size() / 2));
  expect_error([&] { read_nifti(trunc_gz); }, ErrorCode::InvalidArgument, {trunc_gz});

  std::string b = good;
  b[344] = 'x';
  const std::string magic = tmp / "magic.nii";
  write_all(magic, b);
  expect_error([&] { read_nifti(magic); }, ErrorCode::InvalidArgument, {magic, "bad magic"});

  b = good;
  int32_t bogus = 1234;
  std::memcpy(&b[0], &bogus, 4);
  const std::string notnifti = tmp / "notnifti.nii";
  write_all(notnifti, b);
  expect_error([&] { read_nifti(notnifti); }, ErrorCode::InvalidArgument, {notnifti, "not a NIfTI"});

  b = good;
  int16_t complex64 = 32;
  std::memcpy(&b[70], &complex64, 2);
  const std::string dtype = tmp / "dtype.nii";
  write_all(dtype, b);
  expect_error([&] { read_nifti(dtype); }, ErrorCode::InvalidArgument, {dtype, "unsupported datatype 32", "complex64"});

  b = good;
  int16_t dims[5] = {4, 5, 6, 7, 2};
  std::memcpy(&b[40], dims, sizeof(dims));
  const std::string vols = tmp / "vols.nii";
  write_all(vols, b);
  expect_error([&] { read_nifti(vols); }, ErrorCode::InvalidArgument, {vols, "several volumes"});

  b = good;
  int16_t two_d[3] = {2, 5, 6};
  std::memcpy(&b[40], two_d, sizeof(two_d));
  const std::string flat = tmp / "flat.nii";
  write_all(flat, b);
  expect_error([&] { read_nifti(flat); }, ErrorCode::InvalidArgument, {flat, "2-D"});

  b = good;
  float off = 100;
  std::memcpy(&b[108], &off, 4);
  const std::string voff = tmp / "voff.nii";
  write_all(voff, b);
  expect_error([&] { read_nifti(voff); }, ErrorCode::InvalidArgument, {voff, "vox_offset"});

  // a header claiming 4000^3 voxels (6.4e10, 64 GB of uint8) over a short file: "truncated", without
  // allocating the claimed size first; 32767^3 is refused as too large
  b = good;
  int16_t huge[4] = {3, 4000, 4000, 4000};
  std::memcpy(&b[40], huge, sizeof(huge));
  const std::string claim = tmp / "claim.nii.gz";
  write_all(claim, gzip_bytes(b));
  expect_error([&] { read_nifti(claim); }, ErrorCode::InvalidArgument, {claim, "truncated"});
  int16_t huger[4] = {3, 32767, 32767, 32767};
  std::memcpy(&b[40], huger, sizeof(huger));
  write_all(claim, b);
  expect_error([&] { read_nifti(claim); }, ErrorCode::InvalidArgument, {claim, "too large"});

  expect_error([&] { read_nifti(tmp / "absent.nii.gz"); }, ErrorCode::IoError, {"absent.nii.gz"});
}

TEST(SegNifti, VoxOffsetIsHonoured) {
  // io_small_ext_* have a 32-byte extension: data starts at 384, not 352. Shifting vox_offset by one voxel
  // must shift the data read (and then the file is one voxel short -> truncated).
  const std::string good = read_all(kData + "io_small_ext_u8.nii");
  float off;
  std::memcpy(&off, &good[108], 4);
  ASSERT_EQ(off, 384.0f);
  NiftiImage a = read_nifti(kData + "io_small_ext_u8.nii");
  EXPECT_EQ(a.data.data<float>()[0], (float)(uint8_t)good[384]);
  TempDir tmp;
  std::string b = good + std::string(1, '\x07');
  off = 385;
  std::memcpy(&b[108], &off, 4);
  write_all(tmp / "shift.nii", b);
  NiftiImage s = read_nifti(tmp / "shift.nii");
  EXPECT_EQ(s.data.data<float>()[0], a.data.data<float>()[1]);
  EXPECT_EQ(s.data.data<float>()[a.data.numel() - 1], 7.0f);
}

// --------------------------------------------------------------------------------------------- NIfTI write

TEST(SegNifti, WriterMatchesNibabelNifti1Image) {
  // The nibabel files were written as nnU-Net's NibabelIO.write_seg does: Nifti1Image(seg.T, affine).
  json r = refs();
  TempDir tmp;
  int n = 0;
  for (auto it = r["written"].begin(); it != r["written"].end(); ++it) {
    SCOPED_TRACE(it.key());
    const std::string ref_path = kData + it.key();
    NiftiImage ref = read_nifti(ref_path);
    std::array<double, 16> aff;
    for (int e = 0; e < 16; ++e) aff[e] = it.value()["affine_in"][e].get<double>();
    const std::string out = tmp / it.key();
    if (ref.stored_datatype == 16) {
      write_nifti_float(out, ref.data, aff);
    } else {
      Tensor lab(ref.stored_datatype == 2 ? DType::UInt8 : DType::UInt16, ref.data.shape());
      for (int64_t i = 0; i < lab.numel(); ++i) {
        if (lab.dtype() == DType::UInt8) lab.data<uint8_t>()[i] = (uint8_t)ref.data.data<float>()[i];
        else lab.data<uint16_t>()[i] = (uint16_t)ref.data.data<float>()[i];
      }
      write_nifti_labels(out, lab, aff);
    }
    const std::string a = gunzip(ref_path), b = gunzip(out);
    ASSERT_EQ(a.size(), b.size());
    // every header byte identical except the qform quaternion (b, c, d at 256..267), which nibabel derives
    // by an eigen-decomposition and we by Shepperd's formula: equal to float32 rounding (2e-7)
    for (size_t i = 0; i < 352; ++i) {
      if (i >= 256 && i < 268) continue;
      EXPECT_EQ((int)(unsigned char)a[i], (int)(unsigned char)b[i]) << "header byte " << i;
    }
    for (int q = 0; q < 3; ++q) {
      float fa, fb;
      std::memcpy(&fa, &a[256 + 4 * q], 4);
      std::memcpy(&fb, &b[256 + 4 * q], 4);
      EXPECT_NEAR(fa, fb, 2e-7) << "quatern " << q;
    }
    EXPECT_TRUE(a.compare(352, std::string::npos, b, 352, std::string::npos) == 0) << "voxel data differ";
    // and it reads back with nibabel's affine
    NiftiImage back = read_nifti(out);
    for (int e = 0; e < 16; ++e) EXPECT_EQ(back.affine[e], it.value()["affine"][e].get<double>());
    ++n;
  }
  EXPECT_EQ(n, 3);
  // no temporary files left behind
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << "temporary file left: " << e.path();
    ++files;
  }
  EXPECT_EQ(files, 3);
}

TEST(SegNifti, RoundTripAndAtomicWrite) {
  TempDir tmp;
  Tensor lab(DType::UInt16, {3, 4, 5});
  for (int64_t i = 0; i < lab.numel(); ++i) lab.data<uint16_t>()[i] = (uint16_t)(i * 997 % 65535);
  std::array<double, 16> aff{0, 0, 1.5, 3, 0, -2, 0, 4, 0.5, 0, 0, 5, 0, 0, 0, 1};
  write_nifti_labels(tmp / "rt.nii.gz", lab, aff);
  NiftiImage back = read_nifti(tmp / "rt.nii.gz");
  ASSERT_EQ(back.data.shape(), lab.shape());
  for (int64_t i = 0; i < lab.numel(); ++i) ASSERT_EQ(back.data.data<float>()[i], (float)lab.data<uint16_t>()[i]);
  for (int e = 0; e < 16; ++e) EXPECT_EQ(back.affine[e], aff[e]);
  EXPECT_EQ(back.spacing[0], 1.5);  // column norms of the affine, reader order (k, j, i)
  EXPECT_EQ(back.spacing[1], 2.0);
  EXPECT_EQ(back.spacing[2], 0.5);
  EXPECT_EQ(back.stored_datatype, 512);

  // failed writes leave nothing behind: a target that is a directory (rename fails), a missing directory
  fs::create_directories(tmp.path / "sub" / "taken.nii.gz");
  expect_error([&] { write_nifti_labels(tmp / "sub/taken.nii.gz", lab, aff); }, ErrorCode::IoError, {"taken.nii.gz"});
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path / "sub")) {
    EXPECT_EQ(e.path().filename(), "taken.nii.gz") << "temporary file left: " << e.path();
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  expect_error([&] { write_nifti_labels(tmp / "missing_dir/x.nii", lab, aff); }, ErrorCode::IoError, {"missing_dir/x.nii"});
  Tensor bad(DType::Int32, {2, 2, 2});
  expect_error([&] { write_nifti_labels(tmp / "bad.nii", bad, aff); }, ErrorCode::InvalidArgument, {"uint8 or uint16"});
  EXPECT_FALSE(fs::exists(tmp / "bad.nii"));
}

// --------------------------------------------------------------------------------------------------- pickle

TEST(SegPickle, ReadsRealCheckpoint) {
  SKIP_WITHOUT_CASE();
  auto ck = read_torch_checkpoint(kModel + "fold_0/checkpoint_final.pth");
  ASSERT_EQ(ck->kind, PyValue::Dict);
  const PyValue* ia = ck->get("init_args");
  ASSERT_TRUE(ia && ia->kind == PyValue::Dict);
  ASSERT_TRUE(ia->get("configuration"));
  EXPECT_EQ(ia->get("configuration")->s, "3d_fullres");
  EXPECT_EQ(ia->get("fold")->i, 0);
  ASSERT_TRUE(ck->get("trainer_name"));
  EXPECT_EQ(ck->get("trainer_name")->s, "nnUNetTrainer");
  const PyValue* mir = ck->get("inference_allowed_mirroring_axes");
  ASSERT_TRUE(mir && mir->kind == PyValue::Tuple);
  ASSERT_EQ(mir->items.size(), 3u);
  for (int a = 0; a < 3; ++a) EXPECT_EQ(mir->items[a]->i, a);
  const PyValue* w = ck->get("network_weights");  // an OrderedDict of tensors -> Dict of placeholders
  ASSERT_TRUE(w && w->kind == PyValue::Dict);
  ASSERT_FALSE(w->dict.empty());
  EXPECT_EQ(w->dict[0].first->s, "encoder.stages.0.0.convs.0.conv.weight");
  EXPECT_EQ(w->dict[0].second->kind, PyValue::Object);
  EXPECT_EQ(w->dict[0].second->obj.name, "_rebuild_tensor_v2");
  const PyValue* ds = ia->get("dataset_json");
  ASSERT_TRUE(ds && ds->get("labels"));
  EXPECT_EQ(ds->get("labels")->get("dark")->i, 2);
}

TEST(SegPickle, ReadsPostprocessingPkl) {
  SKIP_WITHOUT_CASE();
  auto v = parse_pickle(read_all(kModel + "crossval_results_folds_0_1/postprocessing.pkl"), "postprocessing.pkl");
  ASSERT_EQ(v->kind, PyValue::Tuple);
  ASSERT_EQ(v->items.size(), 2u);
  const PyValue& fns = *v->items[0];
  const PyValue& kws = *v->items[1];
  ASSERT_EQ(fns.kind, PyValue::List);
  ASSERT_EQ(fns.items.size(), 2u);
  EXPECT_EQ(fns.items[0]->obj.module, "nnunetv2.postprocessing.remove_connected_components");
  EXPECT_EQ(fns.items[0]->obj.name, "remove_all_but_largest_component_from_segmentation");
  EXPECT_EQ(fns.items[0].get(), fns.items[1].get());  // the same memoized global
  ASSERT_EQ(kws.items.size(), 2u);
  EXPECT_EQ(kws.items[0]->get("labels_or_regions")->i, 1);
  EXPECT_EQ(kws.items[1]->get("labels_or_regions")->i, 2);
}

TEST(SegPickle, ValuesOfEveryKindAndDeflatedZip) {
  // torch.save of assorted values, re-zipped with deflate under another archive name (make_seg_io_refs.py)
  auto v = read_torch_checkpoint(kData + "io_ckpt_deflated.pth");
  ASSERT_EQ(v->kind, PyValue::Dict);
  EXPECT_EQ(v->get("init_args")->get("configuration")->s, "2d");
  const std::vector<int64_t> ints = {0, 1, 255, 256, 65535, 65536, -1, -300, -70000, 2147483647LL, -2147483648LL,
                                     1LL << 40, -(1LL << 40), INT64_MAX, INT64_MIN};
  const PyValue* pi = v->get("ints");
  ASSERT_TRUE(pi && pi->kind == PyValue::List);
  ASSERT_EQ(pi->items.size(), ints.size());
  for (size_t i = 0; i < ints.size(); ++i) {
    EXPECT_EQ(pi->items[i]->kind, PyValue::Int);
    EXPECT_EQ(pi->items[i]->i, ints[i]) << i;
  }
  EXPECT_EQ(v->get("big")->kind, PyValue::Object);  // 2**70: opaque
  EXPECT_EQ(v->get("float")->f, 0.1);
  EXPECT_EQ(v->get("neg_float")->f, -2.5e-300);
  EXPECT_EQ(v->get("text")->s, "h\xc3\xa9llo");
  EXPECT_EQ(v->get("long_text")->s, std::string(300, 'x'));
  EXPECT_EQ(v->get("bytes")->kind, PyValue::Bytes);
  EXPECT_EQ(v->get("bytes")->s, std::string("\x00\x01\xff", 3));
  EXPECT_EQ(v->get("none")->kind, PyValue::None);
  EXPECT_TRUE(v->get("flags")->items[0]->b);
  EXPECT_FALSE(v->get("flags")->items[1]->b);
  const PyValue* nested = v->get("nested")->get("a");
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[0]->kind, PyValue::Tuple);
  EXPECT_EQ(nested->items[1]->items[1]->items[0]->i, 4);
  EXPECT_EQ(v->get("tensor")->kind, PyValue::Object);
  EXPECT_EQ(v->get("inference_allowed_mirroring_axes")->items.size(), 2u);
}

TEST(SegPickle, HostileBytesNeverCrash) {
  auto expect_invalid = [](const std::string& bytes, const char* frag) {
    expect_error([&] { parse_pickle(bytes, "hostile"); }, ErrorCode::InvalidModel, {"hostile", frag});
  };
  expect_invalid("", "STOP");
  expect_invalid(".", "empty stack");
  expect_invalid("\x80\x02" "X\xff\xff\xff\x7f" "abc", "truncated");
  expect_invalid(std::string("\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", 9), "exceeds");
  expect_invalid("h\x05.", "memo entry 5");
  expect_invalid("\x85.", "underflow");
  expect_invalid("(\x85.", "underflow");  // below the mark
  expect_invalid("]K\x01K\x02s.", "not a dict");
  expect_invalid("}K\x01" "a.", "not a list");
  expect_invalid("K\x01K\x02R.", "not a tuple");
  expect_invalid("\xff", "unsupported opcode 0xff");
  expect_invalid(std::string("]\x94h\x00" "a.", 6), "cycle");    // l.append(l)
  expect_invalid(std::string("}\x94K\x01h\x00s.", 8), "cycle");  // d[1] = d
  expect_invalid("e.", "MARK");
  expect_invalid("cos\nsystem", "truncated");

  // deep nesting: 200k nested 1-tuples parse and are freed without recursion
  std::string deep = "N" + std::string(200000, '\x85') + ".";
  auto v = parse_pickle(deep, "deep");
  EXPECT_EQ(v->kind, PyValue::Tuple);
  v.reset();

  // random mutations of a real pickle and random bytes: only kiln::Error, never a crash or another exception
  static const char kBase[] =
      "\x80\x04\x95\x50\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x05mod.a\x94\x8c\x04name\x94\x93\x94h\x03"
      "e]\x94(}\x94\x8c\x11labels_or_regions\x94K\x01s}\x94h\x06K\x02se\x86\x94.";
  const std::string base(kBase, sizeof(kBase) - 1);
  ASSERT_NO_THROW(parse_pickle(base, "base"));
  std::mt19937 rng(42);
  int ok = 0, errors = 0;
  for (int it = 0; it < 20000; ++it) {
    std::string b = base;
    const int mode = it % 4;
    if (mode == 0) {
      b[rng() % b.size()] = (char)(rng() & 0xff);
    } else if (mode == 1) {
      b.resize(rng() % b.size());
    } else if (mode == 2) {
      for (int k = 0; k < 4; ++k) b[rng() % b.size()] = (char)(rng() & 0xff);
    } else {
      b.resize(1 + rng() % 64);
      for (auto& c : b) c = (char)(rng() & 0xff);
    }
    try {
      parse_pickle(b, "fuzz");
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 1000);
  EXPECT_GT(ok + errors, 19999);
}

TEST(SegPickle, RejectsBadZips) {
  TempDir tmp;
  const std::string good = read_all(kData + "io_ckpt_nomirror.pth");
  write_all(tmp / "trunc.pth", good.substr(0, good.size() / 2));
  expect_error([&] { read_torch_checkpoint(tmp / "trunc.pth"); }, ErrorCode::InvalidModel, {"trunc.pth"});
  write_all(tmp / "notzip.pth", std::string(64, 'N') + ".");
  expect_error([&] { read_torch_checkpoint(tmp / "notzip.pth"); }, ErrorCode::InvalidModel, {"notzip.pth", "not a zip"});
  std::string corrupt = good;
  const size_t at = corrupt.find("nnUNetTrainer_noMirroring");
  ASSERT_NE(at, std::string::npos);
  corrupt[at] = 'X';
  write_all(tmp / "crc.pth", corrupt);
  expect_error([&] { read_torch_checkpoint(tmp / "crc.pth"); }, ErrorCode::InvalidModel, {"crc.pth", "CRC"});
  expect_error([&] { read_torch_checkpoint(tmp / "absent.pth"); }, ErrorCode::InvalidModel, {"absent.pth"});
  // every truncation of the file: an error, never a crash
  for (size_t n = 0; n < good.size(); n += 7) {
    write_all(tmp / "cut.pth", good.substr(0, n));
    EXPECT_THROW(read_torch_checkpoint(tmp / "cut.pth"), Error) << n;
  }
}

// --------------------------------------------------------------------------------------------- model folder

TEST(SegModelFolder, LoadsReferenceFolder) {
  SKIP_WITHOUT_CASE();
  ModelConfig m = load_model_folder(kModel, {});
  EXPECT_EQ(m.configuration, "3d_fullres");
  EXPECT_EQ(m.folds, (std::vector<int>{0, 1}));
  ASSERT_EQ(m.onnx_paths.size(), 2u);
  EXPECT_EQ(fs::path(m.onnx_paths[1]), fs::path(kModel) / "fold_1/model.onnx");
  EXPECT_EQ(m.transpose_forward, (std::array<int, 3>{0, 1, 2}));
  EXPECT_EQ(m.transpose_backward, (std::array<int, 3>{0, 1, 2}));
  EXPECT_EQ(m.patch_size, (std::vector<int64_t>{32, 64, 64}));
  EXPECT_EQ(m.spacing, (std::vector<double>{3.0, 1.0, 1.0}));
  EXPECT_FALSE(m.is_2d);
  EXPECT_EQ(m.normalization_schemes, (std::vector<std::string>{"CTNormalization", "ZScoreNormalization"}));
  EXPECT_EQ(m.use_mask_for_norm, (std::vector<bool>{false, true}));
  ASSERT_EQ(m.intensity_properties.count(0), 1u);
  EXPECT_EQ(m.intensity_properties[0].mean, 16.221753828608666);
  EXPECT_EQ(m.intensity_properties[0].std, 126.09314659024237);
  EXPECT_EQ(m.intensity_properties[0].percentile_00_5, -150.0);
  EXPECT_EQ(m.intensity_properties[0].percentile_99_5, 217.0);
  EXPECT_EQ(m.intensity_properties[1].percentile_99_5, 594.0244009399413);
  EXPECT_EQ(m.resample_data.order, 3);
  EXPECT_EQ(m.resample_data.order_z, 0);
  EXPECT_FALSE(m.resample_data.force_separate_z.has_value());
  EXPECT_EQ(m.resample_probabilities.order, 1);
  EXPECT_EQ(m.resample_probabilities.order_z, 0);
  EXPECT_EQ(m.image_reader_writer, "NibabelIO");
  EXPECT_EQ(m.num_input_channels, 2);
  EXPECT_EQ(m.file_ending, ".nii.gz");
  EXPECT_EQ(m.label_values, (std::vector<int>{0, 1, 2}));
  EXPECT_FALSE(m.has_regions);
  EXPECT_EQ(m.num_outputs(), 3);
  EXPECT_EQ(m.mirror_axes, (std::vector<int>{0, 1, 2}));
  ASSERT_EQ(m.postprocessing.size(), 2u);
  EXPECT_EQ(m.postprocessing[0].labels_or_regions, (std::vector<std::vector<int>>{{1}}));
  EXPECT_EQ(m.postprocessing[1].labels_or_regions, (std::vector<std::vector<int>>{{2}}));

  ModelConfig one = load_model_folder(kModel, {1});
  EXPECT_EQ(one.folds, (std::vector<int>{1}));
  EXPECT_EQ(one.configuration, "3d_fullres");
  expect_error([&] { load_model_folder(kModel, {3}); }, ErrorCode::InvalidModel, {"fold 3", "available folds: 0, 1"});
  expect_error([&] { load_model_folder(kModel, {0}, "checkpoint_best.pth"); }, ErrorCode::InvalidModel,
               {"checkpoint_best.pth", "available folds: none"});
}

namespace {

// A model folder in a temp dir: the reference plans/dataset/postprocessing (small files, copied), a tiny
// checkpoint from tests/data, and optionally an (empty) model.onnx per fold. Edits go through `plans`/`dataset`.
struct FakeFolder {
  TempDir tmp;
  json plans, dataset;
  FakeFolder(bool with_onnx, const std::string& ckpt = "io_ckpt_nomirror.pth") {
    plans = json::parse(read_all(kModel + "plans.json"));
    dataset = json::parse(read_all(kModel + "dataset.json"));
    fs::create_directories(tmp.path / "fold_0");
    fs::copy_file(kData + ckpt, tmp / "fold_0/checkpoint_final.pth");
    if (with_onnx) write_all(tmp / "fold_0/model.onnx", "");
    fs::create_directories(tmp.path / "fold_all");  // never auto-detected
    fs::create_directories(tmp.path / "crossval_results_folds_0_1");
    fs::copy_file(kModel + "crossval_results_folds_0_1/postprocessing.pkl", tmp / "crossval_results_folds_0_1/postprocessing.pkl");
  }
  ModelConfig load(const std::vector<int>& folds = {}) {
    write_all(tmp / "plans.json", plans.dump());
    write_all(tmp / "dataset.json", dataset.dump());
    return load_model_folder(tmp.path.string(), folds);
  }
};

}  // namespace

TEST(SegModelFolder, ErrorsAndOptions) {
  SKIP_WITHOUT_CASE();
  {
    FakeFolder f(false);
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"fold 0", "fold_0/model.onnx", "torch.onnx.export"});
  }
  {
    FakeFolder f(true);
    ModelConfig m = f.load();
    EXPECT_EQ(m.folds, (std::vector<int>{0}));
    EXPECT_TRUE(m.mirror_axes.empty());  // the checkpoint has no inference_allowed_mirroring_axes
    EXPECT_EQ(m.postprocessing.size(), 2u);
  }
  {
    FakeFolder f(true);
    json& cfgs = f.plans["configurations"];
    cfgs["3d_base"] = cfgs["3d_fullres"];
    cfgs["3d_fullres"] = {{"inherits_from", "3d_base"}, {"patch_size", {16, 32, 48}}};
    cfgs["3d_fullres"]["resampling_fn_data_kwargs"] = {{"is_seg", false}, {"order", 1}, {"order_z", 1}, {"force_separate_z", true}};
    ModelConfig m = f.load();
    EXPECT_EQ(m.patch_size, (std::vector<int64_t>{16, 32, 48}));
    EXPECT_EQ(m.spacing, (std::vector<double>{3.0, 1.0, 1.0}));  // inherited
    EXPECT_EQ(m.resample_data.order, 1);
    EXPECT_EQ(m.resample_data.order_z, 1);
    EXPECT_EQ(m.resample_data.force_separate_z, std::optional<bool>(true));
    f.plans["configurations"]["3d_base"]["inherits_from"] = "3d_fullres";
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"cycle"});
  }
  {
    FakeFolder f(true);
    f.plans["configurations"]["3d_fullres"]["resampling_fn_data"] = "resample_torch_fornnunet";
    expect_error([&] { f.load(); }, ErrorCode::Unsupported, {"resampling_fn_data", "resample_torch_fornnunet"});
  }
  {
    FakeFolder f(true);
    f.plans["configurations"]["3d_fullres"]["resampling_fn_probabilities_kwargs"]["order"] = 2;
    expect_error([&] { f.load(); }, ErrorCode::Unsupported, {"resampling_fn_probabilities_kwargs.order"});
  }
  {
    FakeFolder f(true);
    f.plans["image_reader_writer"] = "Tiff3DIO";
    expect_error([&] { f.load(); }, ErrorCode::Unsupported, {"image_reader_writer", "Tiff3DIO"});
  }
  {
    FakeFolder f(true);
    f.plans["image_reader_writer"] = "SimpleITKIO";
    EXPECT_EQ(f.load().image_reader_writer, "SimpleITKIO");
  }
  {
    FakeFolder f(true);
    f.plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my.nets.FancyNet";
    expect_error([&] { f.load(); }, ErrorCode::Unsupported, {"network_class_name", "FancyNet"});
    f.plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] =
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet";
    EXPECT_NO_THROW(f.load());
  }
  {
    FakeFolder f(true);
    f.plans["configurations"]["3d_fullres"]["normalization_schemes"][1] = "MyNorm";
    expect_error([&] { f.load(); }, ErrorCode::Unsupported, {"normalization_schemes", "MyNorm"});
  }
  {
    FakeFolder f(true);
    f.plans["foreground_intensity_properties_per_channel"].erase("0");
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"CTNormalization", "channel 0"});
  }
  {
    FakeFolder f(true);
    f.dataset["labels"] = {{"background", 0}, {"whole", {1, 2, 3}}, {"core", {2, 3}}, {"enh", 3}, {"ignore", 4}};
    f.dataset["regions_class_order"] = {1, 2, 3};
    ModelConfig m = f.load();
    EXPECT_TRUE(m.has_regions);
    EXPECT_EQ(m.num_outputs(), 3);
    // dataset.json key order as written by nlohmann (sorted): background, core, enh, ignore, whole
    EXPECT_EQ(m.regions.size(), 3u);
    EXPECT_EQ(m.regions_class_order, (std::vector<int>{1, 2, 3}));
    f.dataset.erase("regions_class_order");
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"regions_class_order"});
  }
  {
    FakeFolder f(true);
    f.dataset["labels"] = {{"background", 0}, {"a", 1}, {"b", 3}};
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"consecutive"});
    f.dataset["labels"] = {{"background", 0}, {"a", 1}, {"ignore", 2}};
    EXPECT_EQ(f.load().label_values, (std::vector<int>{0, 1}));
  }
  {
    FakeFolder f(true, "io_ckpt_deflated.pth");  // init_args.configuration = '2d' is not in the plans
    expect_error([&] { f.load(); }, ErrorCode::InvalidModel, {"configuration '2d'", "3d_fullres"});
  }
}

TEST(SegModelFolder, FindCases) {
  SKIP_WITHOUT_CASE();
  auto cases = find_cases(kCase + "input", ".nii.gz", 2);
  ASSERT_EQ(cases.size(), 2u);
  EXPECT_EQ(cases[0].id, "case_B");
  EXPECT_EQ(cases[1].id, "case_C");
  ASSERT_EQ(cases[1].channels.size(), 2u);
  EXPECT_EQ(fs::path(cases[1].channels[1]).filename(), "case_C_0001.nii.gz");
  auto single = find_cases(kCase + "input/case_C_0001.nii.gz", ".nii.gz", 2);
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0].id, "case_C");
  EXPECT_EQ(fs::path(single[0].channels[0]).filename(), "case_C_0000.nii.gz");
  expect_error([&] { find_cases(kCase + "input", ".nii.gz", 3); }, ErrorCode::InvalidArgument, {"case_B_0002.nii.gz"});
  expect_error([&] { find_cases(kCase + "input", ".nii.gz", 1); }, ErrorCode::InvalidArgument, {"channel 1"});
  expect_error([&] { find_cases(kCase + "input", ".nrrd", 2); }, ErrorCode::InvalidArgument, {"no files"});
  expect_error([&] { find_cases(kCase + "README.md", ".nii.gz", 2); }, ErrorCode::InvalidArgument, {"README.md", "_XXXX"});
  expect_error([&] { find_cases(kCase + "nope", ".nii.gz", 2); }, ErrorCode::InvalidArgument, {"does not exist"});
}

// ----------------------------------------------------------------------------------------- postprocessing

TEST(SegPostprocess, ConnectedComponentsMatchSkimage) {
  Tensor mask = npy::load(kData + "io_cc_mask.npy");
  Tensor ref = npy::load(kData + "io_cc_labels.npy");
  ASSERT_EQ(mask.dtype(), DType::UInt8);
  ASSERT_EQ(ref.dtype(), DType::Int32);
  std::vector<int32_t> labels;
  int64_t n = connected_components_26(mask.data<uint8_t>(), {mask.dim(0), mask.dim(1), mask.dim(2)}, &labels);
  EXPECT_EQ(n, refs()["cc"]["num_components"].get<int64_t>());
  ASSERT_EQ((int64_t)labels.size(), ref.numel());
  int64_t diff = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) diff += labels[i] != ref.data<int32_t>()[i];
  EXPECT_EQ(diff, 0) << "labels differ from skimage.measure.label(connectivity=3) (numbering included)";
}

TEST(SegPostprocess, ConnectivityIs26AndTiesKeepAll) {
  // corner-touching voxels are one component; two equal largest components both stay
  Tensor seg(DType::UInt8, {4, 4, 4});
  auto at = [&](int k, int j, int i) -> uint8_t& { return seg.data<uint8_t>()[(k * 4 + j) * 4 + i]; };
  at(0, 0, 0) = 1;
  at(1, 1, 1) = 1;  // diagonal neighbour of (0,0,0): same component (size 2)
  at(3, 3, 3) = 1;
  at(3, 3, 2) = 1;  // another component of size 2 (tie)
  at(0, 3, 0) = 1;  // size 1: removed
  at(0, 3, 3) = 2;  // label 2 untouched by a step on label 1
  apply_postprocessing(seg, {PostprocessStep{{{1}}}});
  EXPECT_EQ(at(0, 0, 0), 1);
  EXPECT_EQ(at(1, 1, 1), 1);
  EXPECT_EQ(at(3, 3, 3), 1);
  EXPECT_EQ(at(3, 3, 2), 1);
  EXPECT_EQ(at(0, 3, 0), 0);
  EXPECT_EQ(at(0, 3, 3), 2);
  // a region step: union of labels 1 and 2; the label-2 voxel at (0,3,3) is isolated -> removed
  at(0, 3, 0) = 1;
  at(1, 1, 2) = 2;  // joins the first component (now size 3: the single largest)
  apply_postprocessing(seg, {PostprocessStep{{{1, 2}}}});
  EXPECT_EQ(at(1, 1, 2), 2);
  EXPECT_EQ(at(0, 0, 0), 1);
  EXPECT_EQ(at(3, 3, 3), 0);
  EXPECT_EQ(at(0, 3, 0), 0);
  EXPECT_EQ(at(0, 3, 3), 0);
}

TEST(SegPostprocess, IdenticalToNnunetOnReferenceCases) {
  SKIP_WITHOUT_CASE();
  ModelConfig m = load_model_folder(kModel, {});
  ASSERT_EQ(m.postprocessing.size(), 2u);
  for (const char* c : {"case_B", "case_C"}) {
    SCOPED_TRACE(c);
    NiftiImage pred = read_nifti(kCase + "expected/" + c + ".nii.gz");
    NiftiImage want = read_nifti(kCase + "expected/postprocessed/" + c + ".nii.gz");
    Tensor seg(DType::UInt8, pred.data.shape());
    for (int64_t i = 0; i < seg.numel(); ++i) seg.data<uint8_t>()[i] = (uint8_t)pred.data.data<float>()[i];
    int64_t changed_by_nnunet = 0;
    for (int64_t i = 0; i < seg.numel(); ++i) changed_by_nnunet += pred.data.data<float>()[i] != want.data.data<float>()[i];
    EXPECT_GT(changed_by_nnunet, 0);  // the check below is not vacuous
    apply_postprocessing(seg, m.postprocessing);
    int64_t diff = 0;
    for (int64_t i = 0; i < seg.numel(); ++i) diff += (float)seg.data<uint8_t>()[i] != want.data.data<float>()[i];
    EXPECT_EQ(diff, 0);
  }
}
