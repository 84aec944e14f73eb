// Post-operations fused into a Conv / ConvTranspose / FusedMatMul node by the graph passes (graph/passes), and
// how they are stored on the node, handed to oneDNN, and applied by the reference kernels.
//
// On the node (kiln-private attribute names, never produced by exporters):
//   "kiln.post_ops"   strings: kinds in application order ("sum", "relu", "leaky_relu", "clip", "sigmoid", "tanh",
//                     "hard_sigmoid", "hard_swish", "swish", "elu", "gelu")
//   "kiln.post_alpha" floats:  one per kind (LeakyRelu slope, Clip min, HardSigmoid alpha, Elu alpha, Swish alpha)
//   "kiln.post_beta"  floats:  one per kind (Clip max, HardSigmoid beta)
// A "sum" entry adds an extra input (Conv: input 3, FusedMatMul: input 3) of the output's shape, elementwise.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <dnnl.hpp>

#include "graph/graph.h"

namespace kiln::cpu {

enum class PostKind : uint8_t { Sum, Relu, LeakyRelu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Swish, Elu, Gelu };

struct PostOp {
  PostKind kind = PostKind::Relu;
  float alpha = 0, beta = 0;
  bool operator==(const PostOp&) const = default;
};

const char* post_kind_name(PostKind k);
// Reads the kiln.post_* attributes; throws naming the node when they are inconsistent or unknown.
std::vector<PostOp> post_ops_of(const Node& n);
// Writes them (replacing any existing list).
void set_post_ops(Node& n, const std::vector<PostOp>& ops);
bool has_sum(const std::vector<PostOp>& ops);

// Appends the ops to a oneDNN post-op chain (Sum -> append_sum(1)).
void append_dnnl_post_ops(dnnl::post_ops& po, const std::vector<PostOp>& ops);
// Reference semantics on a float buffer of n elements, in order. `sum` (n elements, same order as y) is the
// summand for a Sum entry (required when the list has one).
void apply_post_ops_ref(const std::vector<PostOp>& ops, float* y, int64_t n, const float* sum);
double apply_post_op_scalar(const PostOp& op, double x);  // not for Sum

}  // namespace kiln::cpu
