// A defensive pickle reader (the opcode subset torch.save and nnU-Net's pickles use, protocols 0-5) and a
// reader for torch's zip checkpoint container. Nothing is executed: GLOBAL/REDUCE/NEWOBJ build opaque
// PyObject records; collections.OrderedDict becomes a plain Dict. Every read is bounds-checked, container
// sizes are limited by the input size, and values are destroyed iteratively (no deep recursion).
#include "pipeline/seg/pickle.h"

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <unordered_map>

#include "pipeline/seg/volume.h"

namespace kiln::seg {

const PyValue* PyValue::get(const std::string& key) const {
  if (kind != Dict) return nullptr;
  for (auto it = dict.rbegin(); it != dict.rend(); ++it)  // a repeated key: the last assignment wins
    if (it->first && it->first->kind == Str && it->first->s == key) return it->second.get();
  return nullptr;
}

namespace {

// Destroys values without recursion: children are moved to a thread-local list drained by the outermost call.
void drop_value(PyValue* v) {
  thread_local std::vector<std::shared_ptr<PyValue>> pending;
  thread_local bool draining = false;
  auto collect = [](PyValue* p) {
    for (auto& c : p->items) pending.push_back(std::move(c));
    for (auto& kv : p->dict) {
      pending.push_back(std::move(kv.first));
      pending.push_back(std::move(kv.second));
    }
    for (auto& c : p->obj.args) pending.push_back(std::move(c));
    p->items.clear();
    p->dict.clear();
    p->obj.args.clear();
  };
  collect(v);
  delete v;
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    std::shared_ptr<PyValue> last = std::move(pending.back());
    pending.pop_back();
    last.reset();  // may call drop_value, which only appends to `pending`
  }
  pending.shrink_to_fit();
  draining = false;
}

using Ptr = std::shared_ptr<PyValue>;

Ptr make(PyValue::Kind k) {
  Ptr p(new PyValue, drop_value);
  p->kind = k;
  return p;
}

class Unpickler {
 public:
  Unpickler(const std::string& b, const std::string& label) : b_(b), label_(label) {}

  Ptr run(size_t* consumed = nullptr) {
    while (true) {
      if (pos_ >= b_.size()) fail("ends without a STOP opcode");
      const size_t op_pos = pos_;
      const unsigned char op = (unsigned char)b_[pos_++];
      op_pos_ = op_pos;
      switch (op) {
        case 0x80: {  // PROTO
          int proto = u8();
          if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
          break;
        }
        case 0x95: take(8); break;  // FRAME: a length hint only
        case '(': marks_.push_back(stack_.size()); break;
        case '.': {  // STOP
          if (stack_.empty()) fail("STOP with an empty stack");
          if (consumed) *consumed = pos_;
          return stack_.back();
        }
        case '}': push(make(PyValue::Dict)); break;
        case ']': push(make(PyValue::List)); break;
        case ')': push(make(PyValue::Tuple)); break;
        case 0x8f: push(make(PyValue::List)); break;  // EMPTY_SET (sets are read as lists)
        case 'd': {  // DICT (protocol 0)
          auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items");
          auto d = make(PyValue::Dict);
          for (size_t i = 0; i < items.size(); i += 2) d->dict.emplace_back(items[i], items[i + 1]);
          push(d);
          break;
        }
        case 'l': case 0x91: {  // LIST, FROZENSET
          auto l = make(PyValue::List);
          l->items = pop_mark();
          push(l);
          break;
        }
        case 't': {
          auto t = make(PyValue::Tuple);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          size_t n = op - 0x84u;
          need(n);
          auto t = make(PyValue::Tuple);
          t->items.assign(stack_.end() - (long)n, stack_.end());
          stack_.resize(stack_.size() - n);
          push(t);
          break;
        }
        case 's': {  // SETITEM
          need(3);
          Ptr v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          need(1);
          set_items(top(), items);
          break;
        }
        case 'a': {  // APPEND
          need(2);
          Ptr v = pop();
          append_items(top(), {v});
          break;
        }
        case 'e': case 0x90: {  // APPENDS, ADDITEMS
          auto items = pop_mark();
          need(1);
          append_items(top(), items);
          break;
        }
        case 'J': {
          int32_t v;
          std::memcpy(&v, take(4), 4);
          push_int(v);
          break;
        }
        case 'K': push_int(u8()); break;
        case 'M': {
          const unsigned char* p = take(2);
          push_int(p[0] | (p[1] << 8));
          break;
        }
        case 0x8a: push_long(u8()); break;  // LONG1
        case 0x8b: {                       // LONG4
          int32_t n;
          std::memcpy(&n, take(4), 4);
          if (n < 0) fail("negative LONG4 length");
          push_long((size_t)n);
          break;
        }
        case 'I': case 'L': {  // INT / LONG (protocol 0): decimal text line
          std::string line = text_line();
          if (!line.empty() && line.back() == 'L') line.pop_back();
          if (line == "01") push_bool(true);
          else if (line == "00") push_bool(false);
          else push_int(parse_int(line));
          break;
        }
        case 'G': {  // BINFLOAT, big endian
          const unsigned char* p = take(8);
          unsigned char r[8];
          for (int i = 0; i < 8; ++i) r[i] = p[7 - i];
          double d;
          std::memcpy(&d, r, 8);
          auto v = make(PyValue::Float);
          v->f = d;
          push(v);
          break;
        }
        case 'F': {  // FLOAT (protocol 0)
          std::string line = text_line();
          char* end = nullptr;
          double d = std::strtod(line.c_str(), &end);
          if (line.empty() || end != line.c_str() + line.size()) fail("malformed FLOAT '" + line + "'");
          auto v = make(PyValue::Float);
          v->f = d;
          push(v);
          break;
        }
        case 0x8c: push_str(PyValue::Str, u8()); break;          // SHORT_BINUNICODE
        case 'X': push_str(PyValue::Str, u32()); break;          // BINUNICODE
        case 0x8d: push_str(PyValue::Str, u64()); break;         // BINUNICODE8
        case 'U': push_str(PyValue::Str, u8()); break;           // SHORT_BINSTRING (py2 str)
        case 'T': {                                               // BINSTRING
          int32_t n;
          std::memcpy(&n, take(4), 4);
          if (n < 0) fail("negative BINSTRING length");
          push_str(PyValue::Str, (size_t)n);
          break;
        }
        case 'C': push_str(PyValue::Bytes, u8()); break;          // SHORT_BINBYTES
        case 'B': push_str(PyValue::Bytes, u32()); break;         // BINBYTES
        case 0x8e: case 0x96: push_str(PyValue::Bytes, u64()); break;  // BINBYTES8, BYTEARRAY8
        case 'V': {  // UNICODE (protocol 0, raw-unicode-escape; kept as is)
          auto v = make(PyValue::Str);
          v->s = text_line();
          push(v);
          break;
        }
        case 'N': push(make(PyValue::None)); break;
        case 0x88: push_bool(true); break;
        case 0x89: push_bool(false); break;
        case 'q': memo_put(u8()); break;
        case 'r': memo_put(u32()); break;
        case 'p': memo_put(parse_index(text_line())); break;  // PUT
        case 0x94: memo_put(memo_.size()); break;            // MEMOIZE
        case 'h': memo_get(u8()); break;
        case 'j': memo_get(u32()); break;
        case 'g': memo_get(parse_index(text_line())); break;  // GET
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = text_line();
          std::string name = text_line();
          push_global(module, name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          need(2);
          Ptr name = pop(), module = pop();
          if (module->kind != PyValue::Str || name->kind != PyValue::Str) fail("STACK_GLOBAL needs two strings");
          push_global(module->s, name->s);
          break;
        }
        case 'R': case 0x81: {  // REDUCE / NEWOBJ: callable(*args)
          need(2);
          Ptr args = pop(), fn = pop();
          if (args->kind != PyValue::Tuple) fail(std::string(op == 'R' ? "REDUCE" : "NEWOBJ") + " arguments are not a tuple");
          push(call(fn, args->items));
          break;
        }
        case 0x92: {  // NEWOBJ_EX: cls, args, kwargs
          need(3);
          Ptr kwargs = pop(), args = pop(), fn = pop();
          if (args->kind != PyValue::Tuple) fail("NEWOBJ_EX arguments are not a tuple");
          push(call(fn, args->items));
          break;
        }
        case 'b': {  // BUILD: state ignored
          need(2);
          pop();
          break;
        }
        case 'Q': {  // BINPERSID: e.g. torch storages -> placeholder
          need(1);
          Ptr pid = pop();
          auto o = make(PyValue::Object);
          o->obj.module = "__persistent__";
          o->obj.name = "persistent_load";
          o->obj.args.push_back(pid);
          push(o);
          break;
        }
        case 'P': {  // PERSID
          auto pid = make(PyValue::Str);
          pid->s = text_line();
          auto o = make(PyValue::Object);
          o->obj.module = "__persistent__";
          o->obj.name = "persistent_load";
          o->obj.args.push_back(pid);
          push(o);
          break;
        }
        case '0': need(1); pop(); break;  // POP
        case '1': pop_mark(); break;       // POP_MARK
        case '2': need(1); push(stack_.back()); break;  // DUP
        default: {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "0x%02x", op);
          fail(std::string("unsupported opcode ") + buf);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    seg_fail(ErrorCode::InvalidModel, "pickle '" + label_ + "': " + msg + " (at byte " + std::to_string(op_pos_) + ")");
  }
  const unsigned char* take(size_t n) {
    if (n > b_.size() - pos_) fail("truncated (needs " + std::to_string(n) + " more bytes)");
    const unsigned char* p = reinterpret_cast<const unsigned char*>(b_.data()) + pos_;
    pos_ += n;
    return p;
  }
  size_t u8() { return *take(1); }
  size_t u32() {
    uint32_t v;
    std::memcpy(&v, take(4), 4);
    return v;
  }
  size_t u64() {
    uint64_t v;
    std::memcpy(&v, take(8), 8);
    if (v > b_.size()) fail("length " + std::to_string(v) + " exceeds the input");
    return (size_t)v;
  }
  std::string text_line() {
    size_t nl = b_.find('\n', pos_);
    if (nl == std::string::npos) fail("truncated text argument (no newline)");
    std::string s = b_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return s;
  }
  int64_t parse_int(const std::string& s) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE) fail("malformed or too large integer '" + s + "'");
    return v;
  }
  size_t parse_index(const std::string& s) {
    int64_t v = parse_int(s);
    if (v < 0) fail("negative memo index");
    return (size_t)v;
  }
  void push(Ptr v) {
    if (stack_.size() >= kMaxStack) fail("stack too deep");
    stack_.push_back(std::move(v));
  }
  void need(size_t n) {
    size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + n) fail("stack underflow");
  }
  Ptr pop() {
    need(1);
    Ptr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Ptr& top() { return stack_.back(); }
  PyList pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    if (m > stack_.size()) fail("corrupt MARK");
    PyList items(std::make_move_iterator(stack_.begin() + (long)m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  void push_int(int64_t v) {
    auto p = make(PyValue::Int);
    p->i = v;
    push(p);
  }
  void push_bool(bool v) {
    auto p = make(PyValue::Bool);
    p->b = v;
    push(p);
  }
  void push_long(size_t n) {  // little-endian two's complement of n bytes
    const unsigned char* p = take(n);
    if (n == 0) return push_int(0);
    bool neg = p[n - 1] & 0x80;
    bool fits = true;
    if (n > 8) {  // fits only if the high bytes are pure sign extension
      fits = true;
      for (size_t i = 8; i < n; ++i)
        if (p[i] != (neg ? 0xff : 0x00)) fits = false;
      if (fits && (bool)(p[7] & 0x80) != neg) fits = false;
    }
    if (!fits) {  // a Python int beyond int64: opaque
      auto o = make(PyValue::Object);
      o->obj.module = "builtins";
      o->obj.name = "int";
      push(o);
      return;
    }
    uint64_t u = neg ? ~uint64_t(0) : 0;
    for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
      u &= ~(uint64_t(0xff) << (8 * i));
      u |= uint64_t(p[i]) << (8 * i);
    }
    int64_t v;
    std::memcpy(&v, &u, 8);
    push_int(v);
  }
  void push_str(PyValue::Kind k, size_t n) {
    const unsigned char* p = take(n);
    auto v = make(k);
    v->s.assign(reinterpret_cast<const char*>(p), n);
    push(v);
  }
  void memo_put(size_t idx) {
    if (stack_.empty()) fail("memo store with an empty stack");
    if (memo_.size() >= kMaxMemo && !memo_.count(idx)) fail("too many memo entries");
    memo_[idx] = stack_.back();
  }
  void memo_get(size_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo entry " + std::to_string(idx) + " read before it was stored");
    push(it->second);
  }
  void push_global(const std::string& module, const std::string& name) {
    auto o = make(PyValue::Object);
    o->obj.module = module;
    o->obj.name = name;
    push(o);
  }
  Ptr call(const Ptr& fn, const PyList& args) {
    if (fn->kind != PyValue::Object) fail("calling a value that is not a class or function");
    if (fn->obj.module == "collections" && fn->obj.name == "OrderedDict") {
      auto d = make(PyValue::Dict);
      if (!args.empty() && (args[0]->kind == PyValue::List || args[0]->kind == PyValue::Tuple))
        for (const auto& kv : args[0]->items)
          if ((kv->kind == PyValue::Tuple || kv->kind == PyValue::List) && kv->items.size() == 2)
            d->dict.emplace_back(kv->items[0], kv->items[1]);
      return d;
    }
    const std::string& mod = fn->obj.module;
    const std::string& name = fn->obj.name;
    if (mod == "_codecs" && name == "encode" && args.size() == 2 && args[0]->kind == PyValue::Str &&
        args[1]->kind == PyValue::Str && (args[1]->s == "latin1" || args[1]->s == "latin-1")) {
      // protocol 2 writes bytes as _codecs.encode(<latin-1 text>, 'latin1'): decode the UTF-8 code points
      auto out = make(PyValue::Bytes);
      const std::string& u = args[0]->s;
      for (size_t i = 0; i < u.size();) {
        unsigned char c0 = (unsigned char)u[i];
        if (c0 < 0x80) {
          out->s += (char)c0;
          i += 1;
        } else if ((c0 & 0xE0) == 0xC0 && i + 1 < u.size() && (c0 & 0x1F) <= 0x03) {
          out->s += (char)(((c0 & 0x1F) << 6) | ((unsigned char)u[i + 1] & 0x3F));
          i += 2;
        } else {
          fail("_codecs.encode: text is not latin-1");
        }
      }
      return out;
    }
    if ((mod == "builtins" || mod == "__builtin__") && (name == "bytes" || name == "bytearray") && args.empty())
      return make(PyValue::Bytes);
    if ((mod == "builtins" || mod == "__builtin__") && (name == "set" || name == "frozenset" || name == "list")) {
      auto l = make(PyValue::List);
      if (!args.empty() && (args[0]->kind == PyValue::List || args[0]->kind == PyValue::Tuple)) l->items = args[0]->items;
      return l;
    }
    auto o = make(PyValue::Object);
    o->obj.module = mod;
    o->obj.name = name;
    o->obj.args = args;
    return o;
  }
  // Inserting into a list/dict is the only way to build a reference cycle (tuples and objects are built from
  // existing values); cycles are refused so every parsed value can be freed and walked safely.
  void check_no_cycle(const PyValue* target, const PyList& values) {
    std::vector<const PyValue*> todo;
    for (const auto& v : values)
      if (v && (v->kind == PyValue::List || v->kind == PyValue::Tuple || v->kind == PyValue::Dict || v->kind == PyValue::Object))
        todo.push_back(v.get());
    while (!todo.empty()) {
      const PyValue* v = todo.back();
      todo.pop_back();
      if (!v) continue;
      if (v == target) fail("self-referencing container (reference cycle) is not supported");
      if (++cycle_work_ > kMaxCycleWork) fail("too many shared references (pickle too complex)");
      for (const auto& c : v->items) todo.push_back(c.get());
      for (const auto& kv : v->dict) {
        todo.push_back(kv.first.get());
        todo.push_back(kv.second.get());
      }
      for (const auto& c : v->obj.args) todo.push_back(c.get());
    }
  }
  void set_items(const Ptr& target, const PyList& kv) {
    if (target->kind == PyValue::Object) return;  // e.g. a custom dict subclass: contents ignored
    if (target->kind != PyValue::Dict) fail("SETITEM(S) on a value that is not a dict");
    if (target->dict.size() + kv.size() / 2 > kMaxStack) fail("dict too large");
    check_no_cycle(target.get(), kv);
    for (size_t i = 0; i + 1 < kv.size(); i += 2) target->dict.emplace_back(kv[i], kv[i + 1]);
  }
  void append_items(const Ptr& target, const PyList& items) {
    if (target->kind == PyValue::Object) return;
    if (target->kind != PyValue::List) fail("APPEND(S) on a value that is not a list");
    if (target->items.size() + items.size() > kMaxStack) fail("list too large");
    check_no_cycle(target.get(), items);
    target->items.insert(target->items.end(), items.begin(), items.end());
  }

  static constexpr size_t kMaxStack = size_t(1) << 26;
  static constexpr size_t kMaxMemo = size_t(1) << 26;
  static constexpr size_t kMaxCycleWork = size_t(1) << 27;
  size_t cycle_work_ = 0;
  const std::string& b_;
  std::string label_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<Ptr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<size_t, Ptr> memo_;
};

// ---- zip container -------------------------------------------------------------------------------------

[[noreturn]] void zip_fail(const std::string& path, const std::string& msg) {
  seg_fail(ErrorCode::InvalidModel, "checkpoint '" + path + "': " + msg);
}

uint16_t le16(const unsigned char* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }
uint64_t le64(const unsigned char* p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

std::string read_range(std::ifstream& f, const std::string& path, uint64_t off, uint64_t n, uint64_t file_size) {
  if (off > file_size || n > file_size - off) zip_fail(path, "truncated zip (a record lies beyond the end of the file)");
  std::string s(n, '\0');
  f.seekg((std::streamoff)off);
  if (n && !f.read(&s[0], (std::streamsize)n)) zip_fail(path, "read error");
  return s;
}

}  // namespace

std::shared_ptr<PyValue> parse_pickle(const std::string& bytes, const std::string& label) {
  Unpickler u(bytes, label);
  return u.run();
}

std::shared_ptr<PyValue> read_torch_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) seg_fail(ErrorCode::InvalidModel, "cannot open checkpoint '" + path + "'");
  f.seekg(0, std::ios::end);
  const uint64_t size = (uint64_t)f.tellg();
  if (size < 22) zip_fail(path, "too small to be a torch zip checkpoint");
  {
    std::string head = read_range(f, path, 0, 4, size);
    if (head.compare(0, 2, "PK") != 0)
      zip_fail(path, "not a zip file (legacy non-zip torch.save files are not supported; re-save with a torch >= 1.6)");
  }
  // end of central directory: scan back over a possible comment
  const uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535 + 20);
  std::string tail = read_range(f, path, size - tail_len, tail_len, size);
  const auto* t = reinterpret_cast<const unsigned char*>(tail.data());
  int64_t eocd = -1;
  for (int64_t i = (int64_t)tail_len - 22; i >= 0; --i)
    if (le32(t + i) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) zip_fail(path, "no end-of-central-directory record (truncated zip?)");
  uint64_t entries = le16(t + eocd + 10), cd_size = le32(t + eocd + 12), cd_off = le32(t + eocd + 16);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {  // zip64
    if (eocd < 20 || le32(t + eocd - 20) != 0x07064b50) zip_fail(path, "zip64 locator missing");
    uint64_t z64_off = le64(t + eocd - 20 + 8);
    std::string z = read_range(f, path, z64_off, 56, size);
    const auto* zp = reinterpret_cast<const unsigned char*>(z.data());
    if (le32(zp) != 0x06064b50) zip_fail(path, "bad zip64 end-of-central-directory record");
    entries = le64(zp + 32);
    cd_size = le64(zp + 40);
    cd_off = le64(zp + 48);
  }
  if (cd_size > (uint64_t(1) << 30)) zip_fail(path, "central directory too large");
  std::string cd = read_range(f, path, cd_off, cd_size, size);
  const auto* c = reinterpret_cast<const unsigned char*>(cd.data());
  uint64_t p = 0;
  bool found = false;
  uint64_t local_off = 0, comp_size = 0, uncomp_size = 0;
  uint32_t crc = 0;
  int method = 0;
  std::string found_name;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p + 46 > cd.size() || le32(c + p) != 0x02014b50) zip_fail(path, "corrupt central directory");
    const uint16_t name_len = le16(c + p + 28), extra_len = le16(c + p + 30), comment_len = le16(c + p + 32);
    if (p + 46 + name_len + extra_len + comment_len > cd.size()) zip_fail(path, "corrupt central directory");
    std::string name(reinterpret_cast<const char*>(c + p + 46), name_len);
    const size_t slash = name.find('/');
    const bool is_pkl = name == "data.pkl" || (slash != std::string::npos && name.substr(slash) == "/data.pkl");
    if (is_pkl && !found) {
      found = true;
      found_name = name;
      method = le16(c + p + 10);
      crc = le32(c + p + 16);
      comp_size = le32(c + p + 20);
      uncomp_size = le32(c + p + 24);
      local_off = le32(c + p + 42);
      // zip64 extra field
      uint64_t x = p + 46 + name_len, xend = x + extra_len;
      while (x + 4 <= xend) {
        uint16_t id = le16(c + x), len = le16(c + x + 2);
        if (x + 4 + len > xend) break;
        if (id == 0x0001) {
          uint64_t q = x + 4, qend = q + len;
          auto next = [&](uint64_t& v) {
            if (v == 0xFFFFFFFFu) {
              if (q + 8 > qend) zip_fail(path, "corrupt zip64 extra field");
              v = le64(c + q);
              q += 8;
            }
          };
          next(uncomp_size);
          next(comp_size);
          next(local_off);
        }
        x += 4 + len;
      }
    }
    p += 46 + name_len + extra_len + comment_len;
  }
  if (!found) zip_fail(path, "no data.pkl in the zip (not a torch.save checkpoint?)");
  std::string lh = read_range(f, path, local_off, 30, size);
  const auto* l = reinterpret_cast<const unsigned char*>(lh.data());
  if (le32(l) != 0x04034b50) zip_fail(path, "bad local header of " + found_name);
  const uint64_t data_off = local_off + 30 + le16(l + 26) + le16(l + 28);
  const uint64_t kMaxPickle = uint64_t(1) << 31;
  if (uncomp_size > kMaxPickle || comp_size > kMaxPickle) zip_fail(path, found_name + " is too large");
  std::string comp = read_range(f, path, data_off, comp_size, size);
  std::string pkl;
  if (method == 0) {
    pkl = std::move(comp);
  } else if (method == 8) {
    pkl.resize(uncomp_size);
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) zip_fail(path, "zlib init failed");
    zs.next_in = reinterpret_cast<Bytef*>(comp.data());
    zs.avail_in = (uInt)comp.size();
    zs.next_out = reinterpret_cast<Bytef*>(pkl.data());
    zs.avail_out = (uInt)pkl.size();
    int r = inflate(&zs, Z_FINISH);
    const uint64_t produced = zs.total_out;
    inflateEnd(&zs);
    if (r != Z_STREAM_END || produced != uncomp_size) zip_fail(path, "corrupt deflated data in " + found_name);
  } else {
    zip_fail(path, found_name + " uses unsupported zip compression method " + std::to_string(method));
  }
  if (pkl.size() != uncomp_size) zip_fail(path, found_name + ": size mismatch");
  if ((uint32_t)crc32(0L, reinterpret_cast<const Bytef*>(pkl.data()), (uInt)pkl.size()) != crc)
    zip_fail(path, found_name + ": CRC mismatch (corrupt file)");
  return parse_pickle(pkl, path + ":" + found_name);
}

}  // namespace kiln::seg
