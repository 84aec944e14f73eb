#include "io/npy.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include "kiln/status.h"

namespace kiln::npy {

namespace {

const char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

[[noreturn]] void bad(const std::string& label, const std::string& what) {
  throw Error(ErrorCode::InvalidArgument, label + ": " + what);
}

struct DescrInfo {
  const char* descr;
  DType dtype;
};

// Little-endian (or byte-order-free) dtypes kiln reads and writes.
const DescrInfo kDescrs[] = {
    {"<f4", DType::Float32}, {"<f8", DType::Float64}, {"<f2", DType::Float16}, {"<i8", DType::Int64},
    {"<i4", DType::Int32},   {"<i2", DType::Int16},   {"|i1", DType::Int8},    {"|u1", DType::UInt8},
    {"<u2", DType::UInt16},  {"<u4", DType::UInt32},  {"<u8", DType::UInt64},  {"|b1", DType::Bool},
};

const char* kSupportedList = "<f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 <u2 <u4 <u8 |b1";

DType dtype_of_descr(const std::string& d, const std::string& label) {
  if (d.size() >= 2) {
    // '=' (native) is little-endian on every machine kiln runs on; single-byte types ignore order.
    std::string norm = d;
    if (norm[0] == '=') norm[0] = '<';
    std::string body = norm.substr(1);
    if (body == "i1" || body == "u1" || body == "b1") norm = "|" + body;
    for (auto& e : kDescrs)
      if (norm == e.descr) return e.dtype;
    if (d[0] == '>')
      bad(label, "dtype '" + d + "' is big-endian; kiln reads little-endian .npy files only (convert with "
                 "arr.astype(arr.dtype.newbyteorder('<')))");
  }
  bad(label, "unsupported dtype '" + d + "' (supported: " + kSupportedList + ")");
}

// A minimal reader for the Python dict literal in a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (64, 1, 8, 8), }
class HeaderParser {
 public:
  HeaderParser(const std::string& s, const std::string& label) : s_(s), label_(label) {}

  void parse(std::string* descr, bool* fortran, Shape* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') { ++i_; break; }
      std::string key = read_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (peek() == '[') bad(label_, "structured (record) dtypes are not supported; save a plain numeric array");
        *descr = read_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = read_bool();
        have_fortran = true;
      } else if (key == "shape") {
        *shape = read_shape();
        have_shape = true;
      } else {
        bad(label_, "unexpected key '" + key + "' in .npy header (expected 'descr', 'fortran_order', 'shape')");
      }
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      skip_ws();
      if (peek() == '}') { ++i_; break; }
      bad(label_, "malformed .npy header: expected ',' or '}' at offset " + std::to_string(i_) + " in " + quoted());
    }
    skip_ws();
    if (i_ != s_.size()) bad(label_, "malformed .npy header: trailing characters after the dictionary in " + quoted());
    if (!have_descr) bad(label_, ".npy header has no 'descr' key: " + quoted());
    if (!have_fortran) bad(label_, ".npy header has no 'fortran_order' key: " + quoted());
    if (!have_shape) bad(label_, ".npy header has no 'shape' key: " + quoted());
  }

 private:
  std::string quoted() const {
    std::string h = s_;
    while (!h.empty() && (h.back() == ' ' || h.back() == '\n')) h.pop_back();
    if (h.size() > 120) h = h.substr(0, 120) + "...";
    for (auto& c : h)
      if (!std::isprint((unsigned char)c)) c = '?';
    return "\"" + h + "\"";
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c)
      bad(label_, std::string("malformed .npy header: expected '") + c + "' at offset " + std::to_string(i_) + " in " + quoted());
    ++i_;
  }
  std::string read_string() {
    char q = peek();
    if (q != '\'' && q != '"') bad(label_, "malformed .npy header: expected a quoted string at offset " + std::to_string(i_) + " in " + quoted());
    ++i_;
    size_t end = s_.find(q, i_);
    if (end == std::string::npos) bad(label_, "malformed .npy header: unterminated string in " + quoted());
    std::string r = s_.substr(i_, end - i_);
    i_ = end + 1;
    return r;
  }
  bool read_bool() {
    if (s_.compare(i_, 4, "True") == 0) { i_ += 4; return true; }
    if (s_.compare(i_, 5, "False") == 0) { i_ += 5; return false; }
    bad(label_, "malformed .npy header: 'fortran_order' must be True or False in " + quoted());
  }
  Shape read_shape() {
    Shape shape;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') { ++i_; break; }
      if (!std::isdigit((unsigned char)peek()))
        bad(label_, "malformed .npy header: 'shape' must be a tuple of non-negative integers in " + quoted());
      int64_t v = 0;
      while (std::isdigit((unsigned char)peek())) {
        int d = peek() - '0';
        if (v > (std::numeric_limits<int64_t>::max() - d) / 10) bad(label_, "dimension in 'shape' is too large in " + quoted());
        v = v * 10 + d;
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 long suffix
      shape.push_back(v);
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      skip_ws();
      if (peek() == ')') { ++i_; break; }
      bad(label_, "malformed .npy header: expected ',' or ')' in 'shape' in " + quoted());
    }
    return shape;
  }

  const std::string& s_;
  const std::string& label_;
  size_t i_ = 0;
};

}  // namespace

std::string descr_of(DType t) {
  for (auto& e : kDescrs)
    if (e.dtype == t) return e.descr;
  return "";
}

Tensor parse(const std::string& bytes, const std::string& label) {
  if (bytes.size() < kMagicLen || std::memcmp(bytes.data(), kMagic, kMagicLen) != 0)
    bad(label, "not a .npy file (missing the \\x93NUMPY magic; expected a file written by numpy.save)");
  if (bytes.size() < kMagicLen + 2) bad(label, "truncated .npy file: ends inside the format version");
  const int major = (unsigned char)bytes[6], minor = (unsigned char)bytes[7];
  size_t header_len = 0, pos = 0;
  if (major == 1) {
    if (bytes.size() < 10) bad(label, "truncated .npy file: ends inside the header length");
    header_len = (unsigned char)bytes[8] | ((size_t)(unsigned char)bytes[9] << 8);
    pos = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) bad(label, "truncated .npy file: ends inside the header length");
    for (int i = 0; i < 4; ++i) header_len |= (size_t)(unsigned char)bytes[8 + i] << (8 * i);
    pos = 12;
  } else {
    bad(label, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (supported: 1.0, 2.0, 3.0)");
  }
  if (minor != 0)
    bad(label, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (supported: 1.0, 2.0, 3.0)");
  if (bytes.size() - pos < header_len)
    bad(label, "truncated .npy file: header says " + std::to_string(header_len) + " bytes but only " +
                   std::to_string(bytes.size() - pos) + " follow");
  // Version 3.0 only differs in allowing UTF-8 in the header; our parser treats bytes opaquely.
  const std::string header = bytes.substr(pos, header_len);
  pos += header_len;

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(header, label).parse(&descr, &fortran, &shape);
  DType dtype = dtype_of_descr(descr, label);
  if (fortran) {
    // With at most one axis longer than 1 both orders give the same bytes.
    int big = 0;
    for (auto d : shape) big += d > 1;
    if (big > 1)
      bad(label, "array of shape " + shape_str(shape) +
                     " is stored in Fortran (column-major) order; kiln reads C order only (save np.ascontiguousarray(arr))");
  }
  int64_t numel = 1;
  for (auto d : shape) {
    if (d != 0 && numel > std::numeric_limits<int64_t>::max() / 16 / d)
      bad(label, "shape " + shape_str(shape) + " is too large");
    numel *= d;
  }
  const size_t need = (size_t)numel * dtype_size(dtype);
  const size_t have = bytes.size() - pos;
  if (have < need)
    bad(label, "truncated .npy file: " + std::string(dtype_name(dtype)) + shape_str(shape) + " needs " +
                   std::to_string(need) + " data bytes but only " + std::to_string(have) + " are present");
  if (have > need)
    bad(label, "corrupt .npy file: " + std::to_string(have - need) + " unexpected bytes after the data of " +
                   dtype_name(dtype) + shape_str(shape));
  Tensor t(dtype, shape);
  if (need) std::memcpy(t.raw(), bytes.data() + pos, need);
  if (dtype == DType::Bool) {
    // numpy bools are 0/1 bytes; normalise anything else so downstream code can rely on it.
    auto* p = t.data<uint8_t>();
    for (int64_t i = 0; i < numel; ++i) p[i] = p[i] != 0;
  }
  return t;
}

Tensor load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::IoError, path + ": cannot open file (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(ErrorCode::IoError, path + ": read error");
  return parse(ss.str(), path);
}

std::string serialize(const Tensor& t0) {
  Tensor t = t0;
  if (t.dtype() == DType::BFloat16) {
    Tensor f(DType::Float32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) f.data<float>()[i] = bfloat16_to_float(t.data<uint16_t>()[i]);
    t = f;
  }
  std::string descr = descr_of(t.dtype());
  if (descr.empty())
    throw Error(ErrorCode::Unsupported, std::string("type ") + dtype_name(t.dtype()) + " has no .npy equivalent");
  std::string shape = "(";
  const Shape& sh = t.shape();
  for (size_t i = 0; i < sh.size(); ++i) shape += (i ? ", " : "") + std::to_string(sh[i]);
  shape += sh.size() == 1 ? ",)" : ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so the data starts on a 64-byte boundary; the header ends in '\n'.
  size_t prefix = kMagicLen + 2 + 2;
  bool v2 = false;
  size_t total = prefix + header.size() + 1;
  if ((total + 63) / 64 * 64 - prefix > 65535) {
    v2 = true;
    prefix += 2;
    total = prefix + header.size() + 1;
  }
  size_t padded = (total + 63) / 64 * 64;
  header.append(padded - total, ' ');
  header += '\n';
  std::string out(kMagic, kMagicLen);
  out += (char)(v2 ? 2 : 1);
  out += (char)0;
  size_t hl = header.size();
  for (int i = 0; i < (v2 ? 4 : 2); ++i) out += (char)((hl >> (8 * i)) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

void save(const std::string& path, const Tensor& t) {
  std::string bytes;
  try {
    bytes = serialize(t);
  } catch (const Error& e) {
    throw Error(e.code(), path + ": " + e.what());
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(ErrorCode::IoError, path + ": cannot create file (" + std::strerror(errno) + ")");
  f.write(bytes.data(), (std::streamsize)bytes.size());
  f.close();
  if (!f) throw Error(ErrorCode::IoError, path + ": write failed");
}

}  // namespace kiln::npy
