// Protobuf wire format, just enough to split a serialized message into its top-level fields without copying them.
// The loader uses it to find the weights' raw bytes in a model file, so they are copied once, straight into
// kiln's tensors, instead of first into protobuf's strings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::wire {

enum class WireType : uint8_t { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

struct Field {
  uint32_t number = 0;
  WireType type = WireType::Varint;
  const char* begin = nullptr;    // the whole field, tag included
  const char* end = nullptr;
  const char* payload = nullptr;  // Bytes: the content after the length
  size_t payload_size = 0;
};

// Splits [p, p + n) into its fields, in order. Returns false for anything it does not handle (truncation, invalid
// wire types, field number 0, groups): the caller then parses the message with protobuf itself.
bool split(const char* p, size_t n, std::vector<Field>* out);

}  // namespace kiln::wire
