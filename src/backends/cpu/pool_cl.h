// Max pooling over channels-last (N, H, W, C) float32 data, 2D, any window, stride, dilation and padding.
#pragma once
#include "backends/cpu/mm_ref.h"

namespace kiln::cpu {

// y[n, oh, ow, :] = max over the window's in-bounds pixels of x[n, ih, iw, :], same semantics as mm::ref_pool
// (a NaN is kept only when it is the window's first in-bounds value; a window with no in-bounds pixel gives -inf).
// Every output pixel is one pass over its window's channel vectors, contiguous in this layout: oneDNN's nhwc pooling
// took about 1.7x as long inside models (googlenet at batch 8: 6.9 ms against ONNX Runtime's 4.0 ms for 13 pools).
void max_pool_2d_cl(const mm::PoolGeom& g, const float* x, float* y);

}  // namespace kiln::cpu
