#include "onnx/loader.h"

#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>

#include "core/staging.h"
#include "kiln_proto/onnx.pb.h"
#include "onnx/wire.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw Error(ErrorCode::InvalidModel, where + ": " + what);
}

struct LoadCtx {
  std::string label;     // file name for messages
  std::string base_dir;  // for external data
  // Raw bytes of the top graph's initializers found in place by the wire splitter (see parse_model), by
  // initializer index; an empty span means the TensorProto itself holds the data. After each one is converted its
  // pages are handed back (release_file_pages) when `mapped` is set.
  std::vector<std::string_view> raw;
  bool mapped = false;
  // Set when large weights may stay in the mapping (load_onnx_file's defer_weights): it keeps the mapping alive.
  std::shared_ptr<void> mapping;
};

// Weights at least this large stay in the mapping when deferring; smaller ones (shapes, scales, biases, often read
// as values while planning) are copied.
constexpr uint64_t kDeferBytes = 64 * 1024;

// Copies `count` elements of a repeated proto field into dst, converting to T.
template <class T, class Field>
void copy_field(const Field& f, T* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<T>(f.Get((int)i));
}

Tensor tensor_from_proto(const onnx::TensorProto& p, const LoadCtx& ctx, const std::string& what,
                         std::string_view raw = {}, bool has_raw = false) {
  std::string where = ctx.label + ": " + what + (p.name().empty() ? "" : " '" + p.name() + "'");
  DType dt = static_cast<DType>(p.data_type());
  if (p.data_type() == 0) bad(where, "data_type is not set");
  if (dt == DType::String) throw Error(ErrorCode::Unsupported, where + ": string tensors are not supported");
  if (!dtype_supported(dt))
    throw Error(ErrorCode::Unsupported, where + ": data type " + std::to_string(p.data_type()) + " is not supported");
  Shape shape;
  int64_t numel = 1;
  for (int64_t d : p.dims()) {
    if (d < 0) bad(where, "negative dimension " + std::to_string(d));
    if (d > 0 && numel > std::numeric_limits<int64_t>::max() / 8 / d) bad(where, "dimensions overflow");
    numel *= d;
    shape.push_back(d);
  }
  if (p.has_segment()) throw Error(ErrorCode::Unsupported, where + ": segmented tensors are not supported");
  const size_t esize = dtype_size(dt);
  const uint64_t nbytes = (uint64_t)numel * esize;

  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (auto& kv : p.external_data()) {
      try {
        if (kv.key() == "location") location = kv.value();
        else if (kv.key() == "offset") offset = std::stoll(kv.value());
        else if (kv.key() == "length") length = std::stoll(kv.value());
      } catch (const std::exception&) {
        bad(where, "external_data '" + kv.key() + "' is not a number: '" + kv.value() + "'");
      }
    }
    if (location.empty()) bad(where, "external data without a 'location'");
    fs::path rel(location);
    if (rel.is_absolute()) bad(where, "external data location '" + location + "' must be relative to the model's folder");
    for (auto& part : rel)
      if (part == "..") bad(where, "external data location '" + location + "' leaves the model's folder");
    fs::path full = fs::path(ctx.base_dir) / rel;
    if (offset < 0) bad(where, "negative external data offset");
    if (length >= 0 && (uint64_t)length != nbytes)
      bad(where, "external data length " + std::to_string(length) + " but shape " + shape_str(shape) + " of " +
                     dtype_name(dt) + " needs " + std::to_string(nbytes) + " bytes");
    std::error_code ec;
    auto fsize = fs::file_size(full, ec);
    if (ec) throw Error(ErrorCode::IoError, where + ": cannot open external data file '" + full.string() + "'");
    if ((uint64_t)offset + nbytes > fsize)
      bad(where, "external data file '" + full.string() + "' has " + std::to_string(fsize) + " bytes, needs " +
                     std::to_string((uint64_t)offset + nbytes));
    Tensor t(dt, shape);
    std::ifstream f(full, std::ios::binary);
    f.seekg(offset);
    f.read(static_cast<char*>(t.raw()), (std::streamsize)nbytes);
    if (!f) throw Error(ErrorCode::IoError, where + ": reading external data file '" + full.string() + "' failed");
    return t;
  }

  if (p.has_raw_data() || has_raw) {
    if (!has_raw) raw = p.raw_data();
    if (raw.size() != nbytes)
      bad(where, "raw_data has " + std::to_string(raw.size()) + " bytes but shape " + shape_str(shape) + " of " +
                     dtype_name(dt) + " needs " + std::to_string(nbytes));
    if (ctx.mapping && nbytes >= kDeferBytes) {
      // Left in the mapping: whole pages inside the weight leave the resident set once the last tensor holding
      // them is gone (a prepared copy has replaced it, or the session is closed).
      struct Range {
        std::shared_ptr<void> mapping;
        const char* p;
        size_t n;
        ~Range() { release_file_pages(p, n); }
      };
      auto keep = std::make_shared<Range>(Range{ctx.mapping, raw.data(), raw.size()});
      if (reinterpret_cast<uintptr_t>(raw.data()) % esize == 0)
        return Tensor::borrowed(dt, shape, const_cast<char*>(raw.data()), std::move(keep));
      return Tensor::deferred(dt, shape, raw.data(), std::move(keep));
    }
    Tensor t(dt, shape);
    if (nbytes) std::memcpy(t.raw(), raw.data(), nbytes);
    return t;
  }

  auto need = [&](int64_t have, const char* field) {
    if (have != numel)
      bad(where, std::string(field) + " has " + std::to_string(have) + " values but shape " + shape_str(shape) +
                     " needs " + std::to_string(numel));
  };
  Tensor t;
  switch (dt) {
    case DType::Float32: need(p.float_data_size(), "float_data"); t = Tensor(dt, shape); copy_field(p.float_data(), t.data<float>(), numel); break;
    case DType::Float64: need(p.double_data_size(), "double_data"); t = Tensor(dt, shape); copy_field(p.double_data(), t.data<double>(), numel); break;
    case DType::Int64: need(p.int64_data_size(), "int64_data"); t = Tensor(dt, shape); copy_field(p.int64_data(), t.data<int64_t>(), numel); break;
    case DType::UInt64: need(p.uint64_data_size(), "uint64_data"); t = Tensor(dt, shape); copy_field(p.uint64_data(), t.data<uint64_t>(), numel); break;
    case DType::UInt32: need(p.uint64_data_size(), "uint64_data"); t = Tensor(dt, shape); copy_field(p.uint64_data(), t.data<uint32_t>(), numel); break;
    case DType::Int32: need(p.int32_data_size(), "int32_data"); t = Tensor(dt, shape); copy_field(p.int32_data(), t.data<int32_t>(), numel); break;
    case DType::Int16: need(p.int32_data_size(), "int32_data"); t = Tensor(dt, shape); copy_field(p.int32_data(), t.data<int16_t>(), numel); break;
    case DType::UInt16: case DType::Float16: case DType::BFloat16:
      need(p.int32_data_size(), "int32_data"); t = Tensor(dt, shape); copy_field(p.int32_data(), t.data<uint16_t>(), numel); break;
    case DType::Int8: need(p.int32_data_size(), "int32_data"); t = Tensor(dt, shape); copy_field(p.int32_data(), t.data<int8_t>(), numel); break;
    case DType::UInt8: case DType::Bool:
      need(p.int32_data_size(), "int32_data"); t = Tensor(dt, shape); copy_field(p.int32_data(), t.data<uint8_t>(), numel); break;
    default: bad(where, "unsupported data type");
  }
  return t;
}

TensorType type_from_proto(const onnx::TypeProto& tp, const std::string& where) {
  TensorType t;
  if (!tp.has_tensor_type()) {
    const char* kind = tp.has_sequence_type() ? "sequence" : tp.has_map_type() ? "map"
                       : tp.has_optional_type() ? "optional" : tp.has_sparse_tensor_type() ? "sparse tensor" : "unknown";
    throw Error(ErrorCode::Unsupported, where + ": values of " + kind + " type are not supported");
  }
  auto& tt = tp.tensor_type();
  t.dtype = static_cast<DType>(tt.elem_type());
  if (tt.has_shape()) {
    t.has_shape = true;
    for (auto& d : tt.shape().dim()) {
      if (d.has_dim_value()) {
        if (d.dim_value() < 0) bad(where, "negative dimension " + std::to_string(d.dim_value()));
        t.dims.push_back(Dim::of(d.dim_value()));
      } else {
        t.dims.push_back(Dim::sym(d.has_dim_param() ? d.dim_param() : ""));
      }
    }
  }
  return t;
}

std::unique_ptr<Graph> graph_from_proto(onnx::GraphProto& gp, const LoadCtx& ctx, int depth);

Attribute attr_from_proto(onnx::AttributeProto& a, const LoadCtx& ctx, const std::string& where, int depth) {
  Attribute r;
  using A = onnx::AttributeProto;
  int type = a.type();
  if (type == A::UNDEFINED) {  // old writers omit the type: infer from the populated field
    if (a.has_f()) type = A::FLOAT;
    else if (a.has_i()) type = A::INT;
    else if (a.has_s()) type = A::STRING;
    else if (a.has_t()) type = A::TENSOR;
    else if (a.has_g()) type = A::GRAPH;
    else if (a.floats_size()) type = A::FLOATS;
    else if (a.ints_size()) type = A::INTS;
    else if (a.strings_size()) type = A::STRINGS;
  }
  std::string w = where + " attribute '" + a.name() + "'";
  switch (type) {
    case A::FLOAT: r.kind = Attribute::Float; r.f = a.f(); break;
    case A::INT: r.kind = Attribute::Int; r.i = a.i(); break;
    case A::STRING: r.kind = Attribute::String; r.s = a.s(); break;
    case A::TENSOR: r.kind = Attribute::TensorV; r.t = tensor_from_proto(a.t(), ctx, w); break;
    case A::GRAPH: r.kind = Attribute::GraphV; r.g = graph_from_proto(*a.mutable_g(), ctx, depth + 1); break;
    case A::FLOATS: r.kind = Attribute::Floats; r.floats.assign(a.floats().begin(), a.floats().end()); break;
    case A::INTS: r.kind = Attribute::Ints; r.ints.assign(a.ints().begin(), a.ints().end()); break;
    case A::STRINGS: r.kind = Attribute::Strings; r.strings.assign(a.strings().begin(), a.strings().end()); break;
    case A::TENSORS:
      r.kind = Attribute::Tensors;
      for (auto& t : a.tensors()) r.tensors.push_back(tensor_from_proto(t, ctx, w));
      break;
    case A::GRAPHS:
      r.kind = Attribute::Graphs;
      for (auto& g : *a.mutable_graphs()) r.graphs.push_back(graph_from_proto(g, ctx, depth + 1));
      break;
    case A::UNDEFINED: r.kind = Attribute::Undefined; break;  // e.g. empty list: no information
    default: throw Error(ErrorCode::Unsupported, ctx.label + ": " + w + " has unsupported type " + std::to_string(type));
  }
  return r;
}

// Consumes `gp`: each initializer's bytes are released as soon as it has been converted, so loading never
// holds more than one extra copy of the weights.
std::unique_ptr<Graph> graph_from_proto(onnx::GraphProto& gp, const LoadCtx& ctx, int depth) {
  if (depth > 64) bad(ctx.label, "subgraphs nested more than 64 deep");
  auto g = std::make_unique<Graph>();
  g->name = gp.name();
  std::string gw = "graph '" + gp.name() + "'";
  int init_index = 0;
  for (auto& t : *gp.mutable_initializer()) {
    if (t.name().empty()) bad(ctx.label, gw + " has an initializer without a name");
    if (g->initializers.count(t.name())) bad(ctx.label, gw + ": initializer '" + t.name() + "' is defined twice");
    std::string_view raw;
    const bool has_raw = depth == 0 && init_index < (int)ctx.raw.size() && ctx.raw[init_index].data() != nullptr;
    if (has_raw) raw = ctx.raw[init_index];
    ++init_index;
    Tensor& w = g->initializers[t.name()] = tensor_from_proto(t, ctx, "initializer", raw, has_raw);
    const bool in_mapping = w.is_deferred() || (has_raw && w.raw() == raw.data());
    if (has_raw && ctx.mapped && !in_mapping) release_file_pages(raw.data(), raw.size());
    // Clear() would keep the strings' and arrays' capacity: swap in an empty message so the bytes are freed now.
    onnx::TensorProto emptied;
    emptied.set_name(t.name());
    t.Swap(&emptied);
  }
  if (gp.sparse_initializer_size())
    throw Error(ErrorCode::Unsupported, ctx.label + ": " + gw + " has sparse initializers, which are not supported");
  for (auto& vi : gp.input()) {
    if (g->initializers.count(vi.name())) continue;  // old exporters list initializers as inputs too
    if (vi.name().empty()) bad(ctx.label, gw + " has an input without a name");
    g->inputs.push_back({vi.name(), type_from_proto(vi.type(), ctx.label + ": input '" + vi.name() + "'")});
  }
  for (auto& vi : gp.output()) {
    if (vi.name().empty()) bad(ctx.label, gw + " has an output without a name");
    g->outputs.push_back({vi.name(), type_from_proto(vi.type(), ctx.label + ": output '" + vi.name() + "'")});
  }
  for (auto& vi : gp.value_info()) {
    try {
      g->value_info[vi.name()] = type_from_proto(vi.type(), ctx.label + ": value_info '" + vi.name() + "'");
    } catch (const Error&) {
      // value_info is only a hint; non-tensor entries are ignored
    }
  }
  int index = 0;
  for (auto& np : *gp.mutable_node()) {
    Node n;
    n.name = np.name().empty() ? np.op_type() + "_" + std::to_string(index) : np.name();
    n.op_type = np.op_type();
    n.domain = canonical_domain(np.domain());
    if (n.op_type.empty()) bad(ctx.label, "node " + std::to_string(index) + " has no op_type");
    n.inputs.assign(np.input().begin(), np.input().end());
    n.outputs.assign(np.output().begin(), np.output().end());
    for (auto& a : *np.mutable_attribute()) {
      if (a.name().empty()) bad(ctx.label, n.describe() + " has an attribute without a name");
      if (!a.ref_attr_name().empty()) bad(ctx.label, n.describe() + ": attribute references are only valid inside functions");
      n.attrs[a.name()] = attr_from_proto(a, ctx, n.describe(), depth);
    }
    g->nodes.push_back(std::move(n));
    ++index;
  }
  return g;
}

}  // namespace

std::string read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::IoError, "'" + path + "' is a directory, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(ErrorCode::IoError, "cannot open '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

namespace {

std::unique_ptr<Graph> graph_from_model(onnx::ModelProto& mp, const std::string& base_dir, const std::string& label,
                                        std::vector<std::string_view> raw = {}, bool mapped = false,
                                        std::shared_ptr<void> mapping = nullptr) {
  if (!mp.has_graph()) bad(label, "model has no graph");
  LoadCtx ctx{label, base_dir, std::move(raw), mapped, std::move(mapping)};
  auto g = graph_from_proto(*mp.mutable_graph(), ctx, 0);
  g->ir_version = mp.ir_version();
  g->producer = mp.producer_name() + (mp.producer_version().empty() ? "" : " " + mp.producer_version());
  g->source_path = label;
  for (auto& op : mp.opset_import()) {
    if (op.version() <= 0) bad(label, "opset_import for domain '" + op.domain() + "' has version " + std::to_string(op.version()));
    g->opsets[canonical_domain(op.domain())] = op.version();
  }
  if (mp.opset_import_size() == 0 && mp.ir_version() < 3) g->opsets[""] = 1;  // IR < 3 implied opset 1
  if (mp.functions_size())
    for (auto& f : mp.functions())
      for (auto& n : g->nodes)
        if (n.op_type == f.name() && canonical_domain(n.domain) == canonical_domain(f.domain()))
          throw Error(ErrorCode::Unsupported, label + ": " + n.describe() + " calls model-local function '" + f.name() + "', which kiln does not inline yet");
  try {
    g->topo_sort();
  } catch (const Error& e) {
    throw Error(e.code(), label + ": " + e.what());
  }
  return g;
}

constexpr const char* kParseError = "not a valid ONNX model (protobuf parsing failed: truncated or corrupt file?)";

// Appends the serialized fields [f.begin, f.end) to `dst` (a message's fields may be parsed in any grouping:
// protobuf merges them as if they were one message).
void append(std::string& dst, const wire::Field& f) { dst.append(f.begin, (size_t)(f.end - f.begin)); }

// Parses a serialized ModelProto, leaving the top graph's initializer raw_data bytes in place: `raw` gets, per
// initializer in order, a view of its raw_data in [p, p + n) (or an empty view when it has none). Everything else
// goes through protobuf. Returns false when the bytes are not a valid model.
bool parse_model(const char* p, size_t n, onnx::ModelProto* mp, std::vector<std::string_view>* raw) {
  raw->clear();
  std::vector<wire::Field> model_fields, graph_fields, tensor_fields;
  const wire::Field* graph = nullptr;
  int graph_count = 0;
  if (wire::split(p, n, &model_fields))
    for (auto& f : model_fields)
      if (f.number == 7 && f.type == wire::WireType::Bytes) graph = &f, ++graph_count;
  // Anything unusual (a graph given in pieces, groups, damage): protobuf alone, copying the bytes.
  if (graph_count != 1 || !wire::split(graph->payload, graph->payload_size, &graph_fields))
    return mp->ParseFromArray(p, (int)n);
  std::string model_rest, graph_rest;
  for (auto& f : model_fields)
    if (&f != graph) append(model_rest, f);
  std::vector<std::string> init_meta;
  for (auto& f : graph_fields) {
    if (f.number != 5 || f.type != wire::WireType::Bytes || !wire::split(f.payload, f.payload_size, &tensor_fields)) {
      append(graph_rest, f);
      continue;
    }
    std::string meta;
    std::string_view data;
    for (auto& tf : tensor_fields) {
      if (tf.number == 9 && tf.type == wire::WireType::Bytes) data = std::string_view(tf.payload, tf.payload_size);  // last one wins
      else append(meta, tf);
    }
    init_meta.push_back(std::move(meta));
    raw->push_back(data.data() ? data : std::string_view());
  }
  // Initializers that could not be split stay in graph_rest: protobuf puts them first, so their spans are empty.
  if (!mp->ParseFromString(model_rest)) return false;
  onnx::GraphProto* g = mp->mutable_graph();
  if (!g->ParseFromString(graph_rest)) return false;
  std::vector<std::string_view> spans(g->initializer_size());
  for (auto& sv : *raw) spans.push_back(sv);
  raw->swap(spans);
  for (auto& meta : init_meta)
    if (!g->add_initializer()->ParseFromString(meta)) return false;
  return true;
}

}  // namespace

std::unique_ptr<Graph> load_onnx_bytes(const std::string& bytes, const std::string& base_dir, const std::string& label) {
  onnx::ModelProto mp;
  if (bytes.empty()) bad(label, "file is empty");
  std::vector<std::string_view> raw;
  if (!parse_model(bytes.data(), bytes.size(), &mp, &raw)) bad(label, kParseError);
  return graph_from_model(mp, base_dir, label, std::move(raw));
}

// The file is mapped and split in place: each weight's bytes are copied once, straight from the mapping into its
// tensor, and that part of the mapping is dropped from the resident set right after -- or, with `defer_weights`,
// large weights stay in the mapping (see Tensor::borrowed and Tensor::deferred), which lives as long as they do.
std::unique_ptr<Graph> load_onnx_file(const std::string& path, bool defer_weights) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::IoError, "'" + path + "' is a directory, not a file");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::IoError, "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(ErrorCode::IoError, "cannot read '" + path + "': " + std::strerror(errno));
  }
  const size_t size = (size_t)st.st_size;
  if (size == 0) {
    ::close(fd);
    bad(path, "file is empty");
  }
  if (size > (size_t)INT32_MAX) {
    ::close(fd);
    bad(path, "the file is " + std::to_string(size >> 20) + " MiB; protobuf cannot hold more than 2 GiB: export with "
              "external data (onnx.save_model(..., save_as_external_data=True)) so the weights live in side files");
  }
  // Writable but private: a kernel that writes into a weight left here gets a page of its own; the file never changes.
  void* m = ::mmap(nullptr, size, PROT_READ | (defer_weights ? PROT_WRITE : 0), MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw Error(ErrorCode::IoError, "cannot map '" + path + "': " + std::strerror(errno));
  std::shared_ptr<void> mapping(m, [size](void* p) { ::munmap(p, size); });
  if (!defer_weights) ::madvise(m, size, MADV_SEQUENTIAL);
  onnx::ModelProto mp;
  std::vector<std::string_view> raw;
  if (!parse_model(static_cast<const char*>(m), size, &mp, &raw)) bad(path, kParseError);
  std::string dir = fs::path(path).parent_path().string();
  return graph_from_model(mp, dir.empty() ? "." : dir, path, std::move(raw), true, defer_weights ? mapping : nullptr);
}

Tensor load_tensor_file(const std::string& path, std::string* name) {
  std::string bytes = read_file_bytes(path);
  onnx::TensorProto tp;
  if (!tp.ParseFromString(bytes)) bad(path, "not a serialized TensorProto");
  if (name) *name = tp.name();
  std::string dir = fs::path(path).parent_path().string();
  return tensor_from_proto(tp, LoadCtx{path, dir.empty() ? "." : dir, {}, false, nullptr}, "tensor");
}

std::string serialize_tensor(const Tensor& t, const std::string& name) {
  onnx::TensorProto tp;
  tp.set_name(name);
  tp.set_data_type((int)t.dtype());
  for (auto d : t.shape()) tp.add_dims(d);
  tp.set_raw_data(std::string(static_cast<const char*>(t.raw()), t.nbytes()));
  return tp.SerializeAsString();
}

}  // namespace kiln
