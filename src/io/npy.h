// NumPy .npy files <-> Tensor (format versions 1.0, 2.0 and 3.0; little-endian, C order).
// Every problem raises kiln::Error naming the file (or `label`) and what was expected:
// IoError when the file can't be read or written, InvalidArgument for malformed or unsupported contents.
#pragma once
#include <string>

#include "kiln/tensor.h"

namespace kiln::npy {

// Reads a .npy file.
Tensor load(const std::string& path);
// Parses the bytes of a .npy file; `label` names the source in errors.
Tensor parse(const std::string& bytes, const std::string& label);

// Writes `t` as a .npy file (version 1.0, or 2.0 for very long headers). BFloat16 has no .npy dtype
// and is written as float32.
void save(const std::string& path, const Tensor& t);
std::string serialize(const Tensor& t);

// The .npy dtype string of a kiln dtype ("<f4", "|b1", ...), or "" when it has none.
std::string descr_of(DType t);

}  // namespace kiln::npy
