#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <sched.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <vector>

#include "kiln/tensor.h"
#include "core/helper_thread.h"

using namespace kiln;

TEST(Tensor, AllocatesZeroedAndAligned) {
  Tensor t(DType::Float32, {2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

namespace {
size_t resident_pages(void* p, size_t bytes) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (bytes + page - 1) / page;
  std::vector<unsigned char> v(n);
  if (mincore(p, bytes, v.data()) != 0) return 0;
  size_t r = 0;
  for (unsigned char c : v) r += c & 1;
  return r;
}
}  // namespace

// The arena's pages are mapped ahead of its first run (Plan::run): all of them, on several threads, still zeroed.
TEST(Tensor, PrefaultMapsEveryPageOfALargeBuffer) {
  const size_t bytes = (24u << 20) + 12345;  // not a whole number of pages, nor of the threads' shares
  auto buf = allocate_buffer(bytes);
  const size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (bytes + page - 1) / page;
  ASSERT_LT(resident_pages(buf.get(), bytes), pages / 2) << "a fresh mapping should not be resident yet";
  // Whether this kernel has MADV_POPULATE_WRITE (Linux >= 5.14): without it prefault_buffer does nothing, by design.
  if (madvise(buf.get(), page, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
    GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE";
  prefault_buffer(buf.get(), bytes, 3);
  EXPECT_EQ(resident_pages(buf.get(), bytes), pages);
  const unsigned char* b = static_cast<const unsigned char*>(buf.get());
  for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(b[i], 0) << i;
  EXPECT_EQ(b[bytes - 1], 0);
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

TEST(HelperThread, StartsOffItsCreatorsCpuAndRunsItsFunction) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> ran{0};
    cpu_set_t during;
    CPU_ZERO(&during);
    HelperThread h([&] {
      sched_getaffinity(0, sizeof(during), &during);
      ran.fetch_add(1);
    });
    h.join();
    ASSERT_EQ(ran.load(), 1);
    // By the time the function runs, the thread may use every CPU its creator may.
    EXPECT_TRUE(CPU_EQUAL(&during, &allowed)) << "round " << round;
    ASSERT_GE(h.first_cpu(), 0);
    if (CPU_COUNT(&allowed) > 1) {
      EXPECT_NE(h.first_cpu(), h.creator_cpu()) << "round " << round;
    }
  }
}
