// Helpers shared by the unit tests: a per-test temporary directory and reading a JSON file.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

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

}  // namespace kiln::testing_util
