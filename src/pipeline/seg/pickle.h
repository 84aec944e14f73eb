// A reader for the pickle subset torch.save and nnU-Net's postprocessing.pkl use (protocol 2-5), enough to
// pull plain values (dicts, lists, tuples, str, int, float, bool, None) out of a checkpoint; tensors and other
// objects become opaque placeholders. The .pth zip container is read with own code over zlib.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace kiln::seg {

struct PyValue;
using PyList = std::vector<std::shared_ptr<PyValue>>;
using PyDict = std::vector<std::pair<std::shared_ptr<PyValue>, std::shared_ptr<PyValue>>>;
struct PyObject { std::string module, name; PyList args; };  // GLOBAL + REDUCE / NEWOBJ, BUILD state ignored

struct PyValue {
  enum Kind { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Object } kind = None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;      // Str / Bytes
  PyList items;       // List / Tuple
  PyDict dict;        // Dict (insertion order)
  PyObject obj;       // Object
  const PyValue* get(const std::string& key) const;  // dict lookup by string key, nullptr if absent
};

// Parses a pickle byte string. Throws kiln::Error (InvalidModel) naming `label` on malformed input.
std::shared_ptr<PyValue> parse_pickle(const std::string& bytes, const std::string& label);
// Reads a torch.save zip file and parses its data.pkl (tensor storages are not loaded).
std::shared_ptr<PyValue> read_torch_checkpoint(const std::string& path);

}  // namespace kiln::seg
