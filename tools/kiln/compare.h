// Output-vs-reference comparison shared by `kiln verify` and `kiln run --expect`:
// floats pass when |got - want| <= atol + rtol * |want| (NaN matches NaN, infinities must be equal),
// integers and bools must be equal; optionally the argmax over axis 1 must agree too.
#pragma once
#include <string>

#include "kiln/tensor.h"

namespace kiln::cli {

struct Tolerance {
  double rtol = 1e-3;
  double atol = 1e-5;
  double scale_atol = 0;  // adds scale_atol * max|want| (per output) to atol
  bool argmax = false;    // also require the same argmax over axis 1 where the reference is not a near-tie
};

struct Comparison {
  bool pass = true;
  bool comparable = true;  // false when dtype or shape differ (errors are then meaningless)
  std::string detail;      // why it failed
  double max_abs = 0, max_rel = 0;
  int64_t bad = 0;
  int64_t argmax_positions = -1, argmax_diff = 0;
  int64_t argmax_decisive = 0;  // differing positions where the reference's top-2 gap exceeds 2 * atol
};

Comparison compare(const Tensor& got, const Tensor& want, const Tolerance& tol);
// "max abs err 1e-07  max rel err 3e-06[  argmax diff 0/64]" for a comparable result.
std::string error_summary(const Comparison& c, const Tolerance& tol);

}  // namespace kiln::cli
