// Errors as values at the public API boundary.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>

namespace kiln {

enum class ErrorCode { Ok = 0, InvalidModel, InvalidArgument, Unsupported, RuntimeError, IoError };

class Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok_status() { return {}; }
  bool ok() const { return code_ == ErrorCode::Ok; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  ErrorCode code_ = ErrorCode::Ok;
  std::string message_;
};

// Thrown inside the library; converted to Status before it crosses the public API.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  explicit Error(const std::string& message) : Error(ErrorCode::RuntimeError, message) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace kiln
