// Helpers shared by the unit tests: a per-test temporary directory, reading a JSON file, seeded random tensors and
// comparing outputs bit for bit.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/tensor.h"

namespace kiln::testing_util {

// A fresh directory under the system's temporary directory, named after the process, the running test and a
// counter (two in one test differ); removed with its contents when the object goes.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "_" + info->name() : "test";
    std::replace(name.begin(), name.end(), '/', '_');  // parameterised test names contain '/'
    path = std::filesystem::temp_directory_path() /
           ("kiln_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// The parsed file; throws (failing the test) naming the file when it cannot be opened, with `hint` (e.g. which
// script makes it) appended.
inline nlohmann::json read_json(const std::string& path, const std::string& hint = "") {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path + hint);
  return nlohmann::json::parse(f);
}

// A float32 tensor of values uniform in [-1, 1), the same for the same seed.
inline Tensor uniform_tensor(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Tensor t(DType::Float32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

// Same count, shapes and bytes: for the same kernels on the same values, which compute bit-identical results.
inline void expect_bit_identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].shape(), b[i].shape());
    EXPECT_EQ(0, std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes())) << "output " << i;
  }
}

}  // namespace kiln::testing_util
