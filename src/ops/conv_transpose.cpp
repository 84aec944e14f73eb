// ConvTranspose (opsets 1, 11, 22): transposed convolution over 1-3 spatial axes, with output_padding and
// output_shape; see conv_common.h for the padding rules.
#include "ops/conv_common.h"

namespace kiln {

void register_conv_transpose(Registry& r) {
  r.add("ConvTranspose", 1, make_kernel<ConvKernel<true>>());
}

}  // namespace kiln
