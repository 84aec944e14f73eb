// .npy reader/writer: round trips for every supported dtype, headers of each format version,
// files written by numpy itself, and clear errors for everything we refuse.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/npy.h"
#include "kiln/status.h"

using namespace kiln;

namespace {

// Builds a .npy file by hand: magic, version, header length of the right width, header, data.
std::string make_npy(int major, const std::string& dict, const std::string& data, int minor = 0) {
  std::string out("\x93NUMPY", 6);
  out += (char)major;
  out += (char)minor;
  std::string header = dict + "\n";
  size_t n = header.size();
  if (major == 1) {
    out += (char)(n & 0xff);
    out += (char)(n >> 8);
  } else {
    for (int i = 0; i < 4; ++i) out += (char)((n >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

std::string floats_bytes(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

// Expects parse() to throw an InvalidArgument error whose message contains every fragment.
void expect_error(const std::string& bytes, std::initializer_list<const char*> fragments) {
  try {
    npy::parse(bytes, "bad.npy");
    FAIL() << "no error for a file that should be rejected";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << msg;
    EXPECT_NE(msg.find("bad.npy"), std::string::npos) << "message does not name the file: " << msg;
    for (auto* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
  }
}

template <class T>
Tensor iota_tensor(DType dt, Shape shape) {
  Tensor t(dt, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<T>()[i] = static_cast<T>(i * 3 + 1);
  return t;
}

}  // namespace

TEST(Npy, RoundTripEveryDtype) {
  std::vector<Tensor> ts = {
      iota_tensor<float>(DType::Float32, {2, 3}),     iota_tensor<double>(DType::Float64, {4}),
      iota_tensor<int64_t>(DType::Int64, {3, 1, 2}),  iota_tensor<int32_t>(DType::Int32, {5}),
      iota_tensor<int16_t>(DType::Int16, {2, 2}),     iota_tensor<int8_t>(DType::Int8, {7}),
      iota_tensor<uint8_t>(DType::UInt8, {1, 9}),     iota_tensor<uint16_t>(DType::UInt16, {3}),
      iota_tensor<uint32_t>(DType::UInt32, {2, 2}),   iota_tensor<uint64_t>(DType::UInt64, {2}),
      iota_tensor<uint16_t>(DType::Float16, {2, 2}),  // raw half bit patterns survive unchanged
      Tensor(DType::Float32, {}),                     // 0-d
      Tensor(DType::Float32, {0, 3}),                 // empty
  };
  Tensor b(DType::Bool, {5});
  for (int i = 0; i < 5; ++i) b.data<uint8_t>()[i] = i % 2;
  ts.push_back(b);
  for (auto& t : ts) {
    std::string bytes = npy::serialize(t);
    // numpy aligns the data to 64 bytes (earlier versions 16); we do the same.
    EXPECT_EQ((bytes.size() - t.nbytes()) % 64, 0u) << dtype_name(t.dtype()) << shape_str(t.shape());
    Tensor r = npy::parse(bytes, "rt.npy");
    ASSERT_EQ(r.dtype(), t.dtype());
    ASSERT_EQ(r.shape(), t.shape());
    ASSERT_EQ(r.nbytes(), t.nbytes());
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << dtype_name(t.dtype());
  }
}

TEST(Npy, HeaderShapeSpelling) {
  EXPECT_NE(npy::serialize(Tensor(DType::Float32, {5})).find("'shape': (5,)"), std::string::npos);
  EXPECT_NE(npy::serialize(Tensor(DType::Float32, {})).find("'shape': ()"), std::string::npos);
  EXPECT_NE(npy::serialize(Tensor(DType::Int64, {2, 3})).find("'descr': '<i8'"), std::string::npos);
  EXPECT_NE(npy::serialize(Tensor(DType::Int64, {2, 3})).find("'shape': (2, 3)"), std::string::npos);
}

TEST(Npy, FileRoundTripAndMissingFile) {
  auto dir = std::filesystem::temp_directory_path() / ("kiln_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "a.npy").string();
  Tensor t = iota_tensor<float>(DType::Float32, {3, 4});
  npy::save(path, t);
  Tensor r = npy::load(path);
  EXPECT_EQ(r.shape(), t.shape());
  EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0);
  try {
    npy::load((dir / "missing.npy").string());
    FAIL() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::IoError);
    EXPECT_NE(std::string(e.what()).find("missing.npy"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Npy, ReadsVersions2And3) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  for (int major : {1, 2, 3}) {
    Tensor t = npy::parse(make_npy(major, dict, floats_bytes({1.5f, -2.0f})), "v.npy");
    ASSERT_EQ(t.shape(), Shape({2})) << major;
    EXPECT_EQ(t.data<float>()[0], 1.5f);
    EXPECT_EQ(t.data<float>()[1], -2.0f);
  }
  // Double quotes, no trailing comma, extra whitespace, Python 2 'L' suffix.
  Tensor t = npy::parse(make_npy(1, "{\"shape\": ( 1L , 2 ),\"fortran_order\":False,\"descr\":\"<f4\"}  ",
                                 floats_bytes({3, 4})),
                        "q.npy");
  EXPECT_EQ(t.shape(), Shape({1, 2}));
}

TEST(Npy, ReadsFileWrittenByNumpy) {
  // Committed by the digits example; written by numpy.save.
  Tensor t = npy::load(KILN_SOURCE_DIR "/examples/digits/samples.npy");
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_EQ(t.shape(), Shape({64, 1, 8, 8}));
  Tensor l = npy::load(KILN_SOURCE_DIR "/examples/digits/labels.npy");
  EXPECT_EQ(l.dtype(), DType::Int64);
  EXPECT_EQ(l.shape(), Shape({64}));
  for (int64_t i = 0; i < l.numel(); ++i) {
    EXPECT_GE(l.data<int64_t>()[i], 0);
    EXPECT_LE(l.data<int64_t>()[i], 9);
  }
}

TEST(Npy, FortranOrderRejected) {
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", floats_bytes({1, 2, 3, 4})),
               {"Fortran", "C order"});
  // A 1-d array has the same bytes in both orders, so it is accepted.
  Tensor t = npy::parse(make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", floats_bytes({1, 2})), "f.npy");
  EXPECT_EQ(t.shape(), Shape({2}));
}

TEST(Npy, BigEndianRejected) {
  expect_error(make_npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", floats_bytes({1})),
               {"big-endian", ">f4"});
}

TEST(Npy, UnsupportedDtypes) {
  expect_error(make_npy(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')), {"<c8", "supported"});
  expect_error(make_npy(1, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')), {"|O"});
  expect_error(make_npy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0')),
               {"structured"});
}

TEST(Npy, TruncatedFiles) {
  std::string good = npy::serialize(iota_tensor<float>(DType::Float32, {4, 4}));
  expect_error(good.substr(0, good.size() - 1), {"truncated", "64 data bytes", "63"});
  expect_error(good.substr(0, 30), {"truncated", "header"});
  expect_error(good.substr(0, 9), {"truncated"});
  expect_error(good.substr(0, 7), {"truncated"});
  expect_error(good + "xx", {"unexpected bytes"});
}

TEST(Npy, MalformedHeaders) {
  expect_error("not a numpy file at all", {"not a .npy file"});
  expect_error("", {"not a .npy file"});
  expect_error(make_npy(4, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", floats_bytes({1})), {"version 4.0"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", floats_bytes({1}), 1), {"version 1.1"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False}", ""), {"no 'shape'"});
  expect_error(make_npy(1, "{'fortran_order': False, 'shape': (1,)}", floats_bytes({1})), {"no 'descr'"});
  expect_error(make_npy(1, "{'descr': '<f4', 'shape': (1,)}", floats_bytes({1})), {"no 'fortran_order'"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", floats_bytes({1})), {"True or False"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", ""), {"non-negative"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", floats_bytes({1})), {"'extra'"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", floats_bytes({1})), {"malformed"});
  expect_error(make_npy(1, "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", floats_bytes({1})), {"malformed"});
  expect_error(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999)}", ""),
               {"too large"});
  // Header length pointing past the end of the file.
  std::string h = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  h[8] = (char)0xff;
  h[9] = (char)0x7f;
  expect_error(h, {"truncated", "header says"});
}

TEST(Npy, BoolsNormalised) {
  Tensor t = npy::parse(make_npy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\x00\x01\x07", 3)), "b.npy");
  EXPECT_EQ(t.dtype(), DType::Bool);
  EXPECT_EQ(t.data<uint8_t>()[2], 1);
}
