#include <gtest/gtest.h>

#include <cmath>

#include "kiln/tensor.h"

using namespace kiln;

TEST(Tensor, AllocatesZeroedAndAligned) {
  Tensor t(DType::Float32, {2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

TEST(Tensor, HalfRoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = half_to_float((uint16_t)h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_half(f), h) << "half bits " << h;
  }
}

TEST(Tensor, HalfRoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), float_to_half(1.0f));     // tie -> even
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), (uint16_t)0x3c02);        // tie -> even (up)
  EXPECT_EQ(float_to_half(65520.0f), (uint16_t)0x7c00);                  // overflows to inf
  EXPECT_EQ(float_to_half(1e-8f), (uint16_t)0);
}
