// Conv (opsets 1, 11, 22): N-D convolution over 1-3 spatial axes; see conv_common.h.
#include "ops/conv_common.h"

namespace kiln {

void register_conv(Registry& r) {
  // Opset 11 only relaxed shape-inference rules and 22 added bfloat16: one kernel serves all versions.
  r.add("Conv", 1, make_kernel<ConvKernel<false>>());
}

}  // namespace kiln
