// Largest-connected-component postprocessing (segmentation-pipeline.md 16).
// Connected components: one raster scan over the 13 already-visited neighbours of the 26-neighbourhood with a
// union-find over provisional labels (no recursion; memory = the int32 label image + one int32 per provisional
// label), then a relabelling pass that numbers components by their first voxel in raster order (the order
// skimage.measure.label produces).
#include "pipeline/seg/postprocess.h"

#include <algorithm>
#include <limits>

namespace kiln::seg {
namespace {

int32_t find_root(std::vector<int32_t>& parent, int32_t x) {
  int32_t r = x;
  while (parent[r] != r) r = parent[r];
  while (parent[x] != r) {  // path compression
    int32_t next = parent[x];
    parent[x] = r;
    x = next;
  }
  return r;
}

void unite(std::vector<int32_t>& parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a == b) return;
  if (a < b) parent[b] = a;  // the smaller (earlier) label becomes the root
  else parent[a] = b;
}

}  // namespace

int64_t connected_components_26(const uint8_t* mask, const Shape3& shape, std::vector<int32_t>* labels) {
  const int64_t K = shape[0], J = shape[1], I = shape[2];
  if (K < 0 || J < 0 || I < 0) seg_fail(ErrorCode::InvalidArgument, "connected_components_26: negative shape");
  const int64_t n = K * J * I;
  labels->assign((size_t)n, 0);
  int32_t* L = labels->data();
  std::vector<int32_t> parent{0};  // provisional label 0 = background
  // The 13 neighbours visited before (k, j, i) in raster order.
  struct Off { int dk, dj, di; };
  static const Off prev[13] = {{-1, -1, -1}, {-1, -1, 0}, {-1, -1, 1}, {-1, 0, -1}, {-1, 0, 0}, {-1, 0, 1}, {-1, 1, -1},
                               {-1, 1, 0},   {-1, 1, 1},  {0, -1, -1}, {0, -1, 0},  {0, -1, 1}, {0, 0, -1}};
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t i = 0; i < I; ++i) {
        const int64_t idx = (k * J + j) * I + i;
        if (!mask[idx]) continue;
        int32_t lab = 0;
        for (const Off& o : prev) {
          const int64_t kk = k + o.dk, jj = j + o.dj, ii = i + o.di;
          if (kk < 0 || jj < 0 || jj >= J || ii < 0 || ii >= I) continue;
          const int32_t nl = L[(kk * J + jj) * I + ii];
          if (!nl) continue;
          if (!lab) lab = nl;
          else if (nl != lab) unite(parent, lab, nl);
        }
        if (!lab) {
          if (parent.size() >= (size_t)std::numeric_limits<int32_t>::max())
            seg_fail(ErrorCode::InvalidArgument, "connected_components_26: too many components");
          lab = (int32_t)parent.size();
          parent.push_back(lab);
        }
        L[idx] = lab;
      }
  // Final ids by first appearance in raster order.
  std::vector<int32_t> final_id(parent.size(), 0);
  int32_t next = 0;
  for (int64_t idx = 0; idx < n; ++idx) {
    if (!L[idx]) continue;
    const int32_t r = find_root(parent, L[idx]);
    if (!final_id[r]) final_id[r] = ++next;
    L[idx] = final_id[r];
  }
  return next;
}

void apply_postprocessing(Tensor& seg, const std::vector<PostprocessStep>& steps) {
  if (steps.empty()) return;
  if (seg.rank() != 3)
    seg_fail(ErrorCode::InvalidArgument, "postprocessing: expected a 3-D label map, got shape " + shape_str(seg.shape()));
  if (seg.dtype() != DType::UInt8 && seg.dtype() != DType::UInt16)
    seg_fail(ErrorCode::InvalidArgument, std::string("postprocessing: expected a uint8 or uint16 label map, got ") +
                                             dtype_name(seg.dtype()));
  const Shape3 shape{seg.dim(0), seg.dim(1), seg.dim(2)};
  const int64_t n = seg.numel();
  const bool u8 = seg.dtype() == DType::UInt8;
  auto value = [&](int64_t i) -> int { return u8 ? seg.data<uint8_t>()[i] : seg.data<uint16_t>()[i]; };
  std::vector<uint8_t> mask((size_t)n);
  std::vector<int32_t> labels;
  for (const PostprocessStep& step : steps) {
    std::vector<uint8_t> in_set(65536, 0);
    for (const auto& lr : step.labels_or_regions)
      for (int l : lr)
        if (l >= 0 && l < 65536) in_set[l] = 1;
    bool any = false;
    for (int64_t i = 0; i < n; ++i) {
      mask[i] = in_set[value(i)];
      any |= mask[i] != 0;
    }
    if (!any) continue;
    const int64_t ncomp = connected_components_26(mask.data(), shape, &labels);
    std::vector<int64_t> size((size_t)ncomp + 1, 0);
    for (int64_t i = 0; i < n; ++i) size[labels[i]]++;
    int64_t largest = 0;
    for (int64_t c = 1; c <= ncomp; ++c) largest = std::max(largest, size[c]);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t c = labels[i];
      if (c && size[c] != largest) {  // in the mask but not a largest component -> background
        if (u8) seg.data<uint8_t>()[i] = 0;
        else seg.data<uint16_t>()[i] = 0;
      }
    }
  }
  std::vector<int32_t>().swap(labels);
}

}  // namespace kiln::seg
