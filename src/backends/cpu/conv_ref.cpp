#include "backends/cpu/conv_ref.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <vector>

#include "kiln/status.h"

namespace kiln::cpu {

std::string ConvParams::str() const {
  std::ostringstream o;
  auto arr = [&](const char* name, const std::array<int64_t, 3>& a) {
    o << " " << name << "=[";
    for (int i = 3 - nsp; i < 3; ++i) o << a[i] << (i < 2 ? "," : "]");
  };
  o << (transpose ? "ConvTranspose" : "Conv") << nsp << "d N=" << N << " C=" << C << " M=" << M << " G=" << G;
  arr("in", in); arr("k", k); arr("out", out); arr("s", stride); arr("d", dil); arr("pl", pad_l); arr("pr", pad_r);
  return o.str();
}

namespace {

template <class T>
void conv_fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y) {
  const int64_t Cg = p.C / p.G, Mg = p.M / p.G;
  const int64_t ID = p.in[0], IH = p.in[1], IW = p.in[2];
  const int64_t KD = p.k[0], KH = p.k[1], KW = p.k[2];
  const int64_t OD = p.out[0], OH = p.out[1], OW = p.out[2];
  const int64_t NM = p.N * p.M;
#pragma omp parallel for schedule(static)
  for (int64_t nm = 0; nm < NM; ++nm) {
    const int64_t n = nm / p.M, m = nm % p.M, g = m / Mg;
    T* yp = y + nm * OD * OH * OW;
    for (int64_t od = 0; od < OD; ++od)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? (double)b[m] : 0.0;
          for (int64_t c = 0; c < Cg; ++c) {
            const T* xp = x + (n * p.C + g * Cg + c) * ID * IH * IW;
            const T* wp = w + (m * Cg + c) * KD * KH * KW;
            for (int64_t kd = 0; kd < KD; ++kd) {
              const int64_t id = od * p.stride[0] - p.pad_l[0] + kd * p.dil[0];
              if (id < 0 || id >= ID) continue;
              for (int64_t kh = 0; kh < KH; ++kh) {
                const int64_t ih = oh * p.stride[1] - p.pad_l[1] + kh * p.dil[1];
                if (ih < 0 || ih >= IH) continue;
                for (int64_t kw = 0; kw < KW; ++kw) {
                  const int64_t iw = ow * p.stride[2] - p.pad_l[2] + kw * p.dil[2];
                  if (iw < 0 || iw >= IW) continue;
                  acc += (double)xp[(id * IH + ih) * IW + iw] * (double)wp[(kd * KH + kh) * KW + kw];
                }
              }
            }
          }
          yp[(od * OH + oh) * OW + ow] = (T)acc;
        }
  }
}

template <class T>
void conv_bwd_data(const ConvParams& p, const T* x, const T* w, const T* b, T* y) {
  const int64_t Cg = p.C / p.G, Mg = p.M / p.G;
  const int64_t ID = p.in[0], IH = p.in[1], IW = p.in[2];
  const int64_t KD = p.k[0], KH = p.k[1], KW = p.k[2];
  const int64_t OD = p.out[0], OH = p.out[1], OW = p.out[2];
  const int64_t NM = p.N * p.M;
#pragma omp parallel
  {
    std::vector<double> acc((size_t)(OD * OH * OW));
#pragma omp for schedule(static)
    for (int64_t nm = 0; nm < NM; ++nm) {
      const int64_t n = nm / p.M, m = nm % p.M, g = m / Mg, mm = m % Mg;
      std::fill(acc.begin(), acc.end(), b ? (double)b[m] : 0.0);
      for (int64_t c = 0; c < Cg; ++c) {
        const int64_t ci = g * Cg + c;
        const T* xp = x + (n * p.C + ci) * ID * IH * IW;
        const T* wp = w + (ci * Mg + mm) * KD * KH * KW;  // W is [C, M/G, k...]
        for (int64_t id = 0; id < ID; ++id)
          for (int64_t ih = 0; ih < IH; ++ih)
            for (int64_t iw = 0; iw < IW; ++iw) {
              const double xv = (double)xp[(id * IH + ih) * IW + iw];
              for (int64_t kd = 0; kd < KD; ++kd) {
                const int64_t od = id * p.stride[0] - p.pad_l[0] + kd * p.dil[0];
                if (od < 0 || od >= OD) continue;
                for (int64_t kh = 0; kh < KH; ++kh) {
                  const int64_t oh = ih * p.stride[1] - p.pad_l[1] + kh * p.dil[1];
                  if (oh < 0 || oh >= OH) continue;
                  for (int64_t kw = 0; kw < KW; ++kw) {
                    const int64_t ow = iw * p.stride[2] - p.pad_l[2] + kw * p.dil[2];
                    if (ow < 0 || ow >= OW) continue;
                    acc[(od * OH + oh) * OW + ow] += xv * (double)wp[(kd * KH + kh) * KW + kw];
                  }
                }
              }
            }
      }
      T* yp = y + nm * OD * OH * OW;
      for (size_t i = 0; i < acc.size(); ++i) yp[i] = (T)acc[i];
    }
  }
}

template <class T>
void dispatch(const ConvParams& p, const T* x, const T* w, const T* b, T* y) {
  if (p.N * p.M * p.out_size() == 0) return;
  if (p.transpose) conv_bwd_data(p, x, w, b, y);
  else conv_fwd(p, x, w, b, y);
}

std::vector<float> widen(const Tensor& t) {
  std::vector<float> v((size_t)t.numel());
  const uint16_t* s = t.data<uint16_t>();
  if (t.dtype() == DType::Float16) for (size_t i = 0; i < v.size(); ++i) v[i] = half_to_float(s[i]);
  else for (size_t i = 0; i < v.size(); ++i) v[i] = bfloat16_to_float(s[i]);
  return v;
}

}  // namespace

void conv_reference_f32(const ConvParams& p, const float* x, const float* w, const float* b, float* y) { dispatch(p, x, w, b, y); }
void conv_reference_f64(const ConvParams& p, const double* x, const double* w, const double* b, double* y) { dispatch(p, x, w, b, y); }

void conv_reference(const ConvParams& p, const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  switch (x.dtype()) {
    case DType::Float32:
      dispatch(p, x.data<float>(), w.data<float>(), b ? b->data<float>() : nullptr, y.data<float>());
      return;
    case DType::Float64:
      dispatch(p, x.data<double>(), w.data<double>(), b ? b->data<double>() : nullptr, y.data<double>());
      return;
    case DType::Float16:
    case DType::BFloat16: {
      // 16-bit floats: computed in float (accumulated in double), rounded once on output.
      std::vector<float> xf = widen(x), wf = widen(w), bf = b ? widen(*b) : std::vector<float>();
      std::vector<float> yf((size_t)y.numel());
      dispatch(p, xf.data(), wf.data(), b ? bf.data() : nullptr, yf.data());
      uint16_t* yp = y.data<uint16_t>();
      if (x.dtype() == DType::Float16) for (size_t i = 0; i < yf.size(); ++i) yp[i] = float_to_half(yf[i]);
      else for (size_t i = 0; i < yf.size(); ++i) yp[i] = float_to_bfloat16(yf[i]);
      return;
    }
    default:
      throw Error(ErrorCode::Unsupported, std::string("convolution of ") + dtype_name(x.dtype()) + " is not supported");
  }
}

}  // namespace kiln::cpu

namespace kiln::cpu {

}  // namespace kiln::cpu
