#include "onnx/wire.h"

namespace kiln::wire {

namespace {

// Reads a base-128 varint of at most 10 bytes; false when truncated or too long.
bool read_varint(const char*& p, const char* end, uint64_t* v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (p >= end) return false;
    const uint8_t b = static_cast<uint8_t>(*p++);
    r |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

}  // namespace

bool split(const char* p, size_t n, std::vector<Field>* out) {
  out->clear();
  const char* end = p + n;
  while (p < end) {
    Field f;
    f.begin = p;
    uint64_t tag = 0;
    if (!read_varint(p, end, &tag)) return false;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return false;
    f.number = static_cast<uint32_t>(tag >> 3);
    switch (tag & 7) {
      case 0: {
        uint64_t ignored;
        if (!read_varint(p, end, &ignored)) return false;
        f.type = WireType::Varint;
        break;
      }
      case 1:
        if (end - p < 8) return false;
        p += 8;
        f.type = WireType::Fixed64;
        break;
      case 2: {
        uint64_t len = 0;
        if (!read_varint(p, end, &len)) return false;
        if (len > static_cast<uint64_t>(end - p)) return false;
        f.type = WireType::Bytes;
        f.payload = p;
        f.payload_size = static_cast<size_t>(len);
        p += len;
        break;
      }
      case 5:
        if (end - p < 4) return false;
        p += 4;
        f.type = WireType::Fixed32;
        break;
      default:
        return false;  // groups (3, 4) and invalid types
    }
    f.end = p;
    out->push_back(f);
  }
  return true;
}

}  // namespace kiln::wire
