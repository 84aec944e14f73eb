// libFuzzer target: arbitrary bytes as an ONNX model must give an error or a session, never a crash.
// Covers protobuf parsing, tensor/attribute decoding, graph checks, kernel construction and
// shape inference with the declared input types.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kiln/session.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<kiln::Session> s;
  kiln::SessionOptions opt;
  opt.threads = 1;
  // External data is resolved inside a folder that does not exist, so it can only fail cleanly.
  kiln::Status st = kiln::Session::load_from_bytes(bytes, "/nonexistent-kiln-fuzz", opt, &s);
  (void)st;
  return 0;
}
