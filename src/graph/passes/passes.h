// Load-time graph rewrites (run by Session::init when SessionOptions::optimize is set).
//
// Each pass is a pure function of the graph that returns whether it changed anything; optimize() runs them to a
// fixed point. Graph input and output names are never changed. Fused nodes:
//   * Conv / ConvTranspose keep their op type and gain kiln-private attributes "kiln.post_ops" (strings),
//     "kiln.post_alpha" / "kiln.post_beta" (floats) listing post-operations applied in order to the result
//     (see backends/cpu/conv_postops.h). A "sum" post-op (residual Add) adds input 3, which has the output's shape.
//   * MatMul (+ bias Add, + activations) becomes op "FusedMatMul" in domain "kiln" (opset 1; the pass imports the
//     domain): inputs A, B, optional bias [N] / [1, ..., N], plus the same kiln.post_* attributes (no "sum").
//   * Reshape -> Transpose(0, 2, 1, 3, 4) -> Reshape becomes "ChannelShuffle" in domain "kiln": inputs X, S1, S2.
#pragma once
#include <string>
#include <unordered_map>

#include "graph/graph.h"

namespace kiln::passes {

using TypeMap = std::unordered_map<std::string, TensorType>;

// Removes Identity nodes and inference-mode Dropout (mask output unused), rewiring their consumers.
bool eliminate_identity(Graph& g);
// Removes nodes none of whose outputs is used (by a node, a subgraph or as a graph output), and unused initializers.
bool eliminate_dead(Graph& g);
// Evaluates deterministic nodes whose inputs are all initializers (Constant included) with their kernels and
// replaces them by initializers.
bool fold_constants(Graph& g);
// Types of every value for the declared graph input types (empty when the graph cannot be analysed).
TypeMap infer_types(const Graph& g);
// MatMul with a constant B followed by Add of a constant [N] bias -> kiln:FusedMatMul.
bool fuse_matmul_bias(Graph& g, const TypeMap& types);
// Add(conv_out, other) with other of the same shape -> Conv with a "sum" post-op and input 3 = other.
bool fuse_conv_add(Graph& g, const TypeMap& types);
// Conv / ConvTranspose / MatMul / FusedMatMul followed by an activation (Relu, LeakyRelu, Clip with constant bounds,
// Sigmoid, Tanh, Elu, HardSigmoid, HardSwish, HardSigmoid+Mul, x*Sigmoid(x), Gelu and its Erf expansion) -> post-op.
bool fuse_activation(Graph& g, const TypeMap& types);

// Conv(Concat(x_1..x_n, axis 1), W, B) -> Conv(x_1, W_1, B), then Conv(x_i, W_i) with a "sum" post-op onto the
// previous result (W_i: W's input channels of x_i): the concatenation is never written. For U-Net decoders
// (upsampled features and a skip connection into a spatial convolution), where it saves a copy of the
// concatenation and its memory; only when the output has no more channels than the concatenation (the sums cost
// less than the copy), the kernel is spatial, and every part has >= 16 channels.
bool split_concat_conv(Graph& g, const TypeMap& types);

// Reshape(X, S1) -> Transpose(perm [0, 2, 1, 3, 4]) -> Reshape(S2), intermediates used nowhere else ->
// kiln:ChannelShuffle(X, S1, S2) (ShuffleNet's channel shuffle; see ops/reshape.cpp).
bool fuse_channel_shuffle(Graph& g);

struct PassStats {
  int removed_nodes = 0;   // nodes before - nodes after
  bool fused = false;
};
// The driver: cleanup + folding to a fixed point, then fusions to a fixed point. Leaves graphs it cannot
// topologically sort untouched (their errors are reported by the planner).
PassStats optimize(Graph& g);

}  // namespace kiln::passes
