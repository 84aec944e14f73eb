// The nnU-Net v2 predictor: read -> preprocess -> sliding window per fold -> fold average -> export ->
// (postprocess) -> write, with input checks, a pre-flight memory estimate and atomic output files.
#include "pipeline/seg/predictor.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "graph/graph.h"
#include "io/npy.h"
#include "pipeline/seg/postprocess.h"
#include "pipeline/seg/preprocess.h"
#include "pipeline/seg/resample.h"
#include "pipeline/seg/sliding_window.h"
#include "runtime/plan.h"

namespace kiln::seg {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void bad_input(const std::string& msg) { seg_fail(ErrorCode::InvalidArgument, msg); }

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string shape3_str(const Shape3& s) {
  return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ")";
}

std::string spacing_str(const Spacing& s) {
  char b[128];
  std::snprintf(b, sizeof b, "(%.9g, %.9g, %.9g)", s[0], s[1], s[2]);
  return b;
}

std::string gib(double bytes) {
  char b[64];
  if (bytes >= 1024.0 * 1024 * 1024)
    std::snprintf(b, sizeof b, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  else
    std::snprintf(b, sizeof b, "%.1f MiB", bytes / (1024.0 * 1024));
  return b;
}

// numpy.allclose(a, b) with rtol 1e-5, atol 1e-8.
bool allclose(const Spacing& a, const Spacing& b) {
  for (int d = 0; d < 3; ++d)
    if (!(std::fabs(a[d] - b[d]) <= 1e-8 + 1e-5 * std::fabs(b[d]))) return false;
  return true;
}

uint64_t sat_mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > UINT64_MAX / a) return UINT64_MAX;
  return a * b;
}

std::string temp_name(const std::string& path) {
  return path + ".tmp" + std::to_string((long)::getpid());
}

// SimpleITKIO reads a 2-D image as one slice (npy[None, None]) whose slice spacing is 999 x the largest in-plane
// spacing (segmentation-pipeline.md 2.1); `sp` in reader order (unused, sy, sx).
double sitk_2d_slice_spacing(const Spacing& sp) { return 999.0 * std::max(sp[1], sp[2]); }

// The spacing preprocessing resamples to (and export resamples from): the plans' spacing for a 3d configuration;
// for a 2d configuration the original spacing of axis 0 (slices are never resampled across) followed by the plans'
// two in-plane values (segmentation-pipeline.md 6, 12).
Spacing target_spacing(const ModelConfig& cfg, const Spacing& original_network_order) {
  if (cfg.spacing.size() == 2 && cfg.is_2d) return {original_network_order[0], cfg.spacing[0], cfg.spacing[1]};
  if (cfg.spacing.size() == 3 && !cfg.is_2d) return {cfg.spacing[0], cfg.spacing[1], cfg.spacing[2]};
  seg_fail(ErrorCode::InvalidModel, "model folder '" + cfg.folder + "': configuration '" + cfg.configuration + "' has a " +
                                        std::to_string(cfg.spacing.size()) + "-value spacing and a " +
                                        std::to_string(cfg.patch_size.size()) + "-value patch size");
}

}  // namespace

// ---------------------------------------------------------------------------------------------- headers

NiftiGeometry peek_nifti_geometry(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) seg_fail(ErrorCode::InvalidArgument, "cannot open '" + path + "'");
  unsigned char h[540];
  const int n = gzread(f, h, sizeof h);
  gzclose(f);
  auto rd32 = [&](int o, bool sw) {
    uint32_t v;
    std::memcpy(&v, h + o, 4);
    return sw ? __builtin_bswap32(v) : v;
  };
  auto rd16 = [&](int o, bool sw) {
    uint16_t v;
    std::memcpy(&v, h + o, 2);
    return sw ? __builtin_bswap16(v) : v;
  };
  auto rd64 = [&](int o, bool sw) {
    uint64_t v;
    std::memcpy(&v, h + o, 8);
    return sw ? __builtin_bswap64(v) : v;
  };
  if (n < 348) bad_input("'" + path + "' is not a NIfTI file (shorter than a NIfTI-1 header)");
  NiftiGeometry g;
  const uint32_t sz = rd32(0, false);
  bool sw;
  if (sz == 348 || __builtin_bswap32(sz) == 348) {
    sw = sz != 348;
    int64_t dim[8];
    for (int i = 0; i < 8; ++i) dim[i] = (int16_t)rd16(40 + 2 * i, sw);
    float pd[8];
    for (int i = 0; i < 8; ++i) {
      uint32_t u = rd32(76 + 4 * i, sw);
      std::memcpy(&pd[i], &u, 4);
    }
    for (int d = 0; d < 3; ++d) {
      g.shape[d] = dim[0] >= 3 - d ? dim[3 - d] : 1;
      g.spacing[d] = std::fabs((double)pd[3 - d]);
    }
    g.spatial_dims = dim[0] == 2 ? 2 : 3;
  } else if ((sz == 540 || __builtin_bswap32(sz) == 540) && n >= 540) {
    sw = sz != 540;
    int64_t dim[8];
    for (int i = 0; i < 8; ++i) dim[i] = (int64_t)rd64(16 + 8 * i, sw);
    double pd[8];
    for (int i = 0; i < 8; ++i) {
      uint64_t u = rd64(104 + 8 * i, sw);
      std::memcpy(&pd[i], &u, 8);
    }
    for (int d = 0; d < 3; ++d) {
      g.shape[d] = dim[0] >= 3 - d ? dim[3 - d] : 1;
      g.spacing[d] = std::fabs(pd[3 - d]);
    }
    g.spatial_dims = dim[0] == 2 ? 2 : 3;
  } else {
    bad_input("'" + path + "' is not a NIfTI file (sizeof_hdr is neither 348 nor 540)");
  }
  for (int d = 0; d < 3; ++d)
    if (g.shape[d] < 1) bad_input("'" + path + "': invalid dimension " + std::to_string(g.shape[d]) + " in the header");
  if (g.spatial_dims == 2) g.spacing[0] = sitk_2d_slice_spacing(g.spacing);
  return g;
}

// ---------------------------------------------------------------------------------------------- reading

CaseImage read_case(const CaseFiles& files, const std::string& image_reader_writer) {
  if (files.channels.empty()) bad_input("case '" + files.id + "' has no channel files");
  if (image_reader_writer != "SimpleITKIO" && image_reader_writer != "NibabelIO")
    seg_fail(ErrorCode::Unsupported, "case '" + files.id + "': image reader '" + image_reader_writer +
                                         "' is not implemented (SimpleITKIO, NibabelIO)");
  const bool sitk = image_reader_writer == "SimpleITKIO";
  CaseImage img;
  img.id = files.id;
  img.channel_paths = files.channels;
  const int64_t C = (int64_t)files.channels.size();
  Shape3 shape0{};
  for (int64_t c = 0; c < C; ++c) {
    const std::string& path = files.channels[(size_t)c];
    if (!fs::exists(path)) bad_input("case '" + files.id + "': missing channel file '" + path + "'");
    NiftiImage im = read_nifti(path, sitk);  // NibabelIO takes 3-D files only (a 2-D one is refused, naming it)
    if (im.data.rank() != 3)
      bad_input("'" + path + "': expected a 3D image, got shape " + shape_str(im.data.shape()));
    if (im.spatial_dims == 2) im.spacing[0] = sitk_2d_slice_spacing(im.spacing);
    const Shape3 sh{im.data.dim(0), im.data.dim(1), im.data.dim(2)};
    if (c == 0) {
      shape0 = sh;
      img.spatial_dims = im.spatial_dims;
      img.spacing = im.spacing;
      img.affine = im.affine;
      img.data = Tensor(DType::Float32, {C, sh[0], sh[1], sh[2]});
    } else {
      if (im.spatial_dims != img.spatial_dims)
        bad_input("case '" + files.id + "': channel file '" + files.channels[0] + "' is a " +
                  std::to_string(img.spatial_dims) + "-D image but '" + path + "' is " +
                  std::to_string(im.spatial_dims) + "-D; all channels of a case must be on the same grid");
      if (sh != shape0)
        bad_input("case '" + files.id + "': channel files '" + files.channels[0] + "' and '" + path +
                  "' have different shapes " + shape3_str(shape0) + " and " + shape3_str(sh) +
                  " (reader order k, j, i); all channels of a case must be on the same grid");
      if (!allclose(im.spacing, img.spacing))
        bad_input("case '" + files.id + "': channel files '" + files.channels[0] + "' and '" + path +
                  "' have different spacings " + spacing_str(img.spacing) + " and " + spacing_str(im.spacing) +
                  " (reader order; compared as numpy.allclose, rtol 1e-5)");
    }
    const int64_t n = im.data.numel();
    const float* src = im.data.data<float>();
    int64_t nan = 0, inf = 0;
#pragma omp parallel for reduction(+ : nan, inf) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      nan += std::isnan(src[i]);
      inf += std::isinf(src[i]);
    }
    if (nan + inf > 0)
      bad_input("'" + path + "' has " + std::to_string(nan + inf) + " non-finite voxel(s) (" + std::to_string(nan) +
                " NaN, " + std::to_string(inf) + " Inf) of " + std::to_string(n) +
                "; nnU-Net's normalisation and network would spread them over the prediction — replace them first");
    std::memcpy(img.data.data<float>() + c * n, src, sizeof(float) * (size_t)n);
  }
  return img;
}

// ---------------------------------------------------------------------------------------------- memory

uint64_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t v;
  std::string unit;
  while (f >> key >> v) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return v * 1024;
  }
  return 0;
}

uint64_t estimate_peak_bytes(const ModelConfig& cfg, int channels, const Shape3& reader_shape,
                             const Spacing& reader_spacing, bool save_probabilities) {
  const uint64_t C = (uint64_t)std::max(channels, 1);
  const uint64_t K = (uint64_t)std::max(cfg.num_outputs(), 1);
  const uint64_t F = (uint64_t)std::max<size_t>(cfg.folds.size(), 1);
  const uint64_t N = sat_mul(sat_mul((uint64_t)reader_shape[0], (uint64_t)reader_shape[1]), (uint64_t)reader_shape[2]);
  Shape3 net_shape{};
  for (int d = 0; d < 3; ++d) net_shape[d] = reader_shape[(size_t)cfg.transpose_forward[(size_t)d]];
  const Spacing net_sp = transpose_spacing(reader_spacing, cfg.transpose_forward);
  Shape3 P3 = net_shape;
  if (cfg.spacing.size() == 3) {
    P3 = compute_new_shape(net_shape, net_sp, {cfg.spacing[0], cfg.spacing[1], cfg.spacing[2]});
  } else if (cfg.spacing.size() == 2) {  // 2d: axis 0 keeps its length, the other two go to the plans' spacing
    const Spacing src{1.0, net_sp[1], net_sp[2]};
    P3 = compute_new_shape(net_shape, src, {1.0, cfg.spacing[0], cfg.spacing[1]});
  }
  // resampled voxels (no crop assumed: an upper bound), padded to the patch (a 2d patch pads axes 1 and 2)
  const int poff = 3 - (int)std::min<size_t>(cfg.patch_size.size(), 3);
  uint64_t P = 1, Pp = 1;
  for (int d = 0; d < 3; ++d) {
    const int64_t pd = std::max<int64_t>(P3[d], 1);
    P = sat_mul(P, (uint64_t)pd);
    Pp = sat_mul(Pp, (uint64_t)std::max<int64_t>(pd, d >= poff ? cfg.patch_size[(size_t)(d - poff)] : 1));
  }
  // A: reading + preprocessing: stacked channels, one channel as read, transposed copy, cropped copy, mask,
  //    resampled output, double scratch of one channel (input and output).
  const uint64_t a = sat_mul(C * 4, N) + 4 * N + sat_mul(C * 4, N) + sat_mul(C * 4, N) + N + sat_mul(C * 4, P) +
                     8 * N + 8 * P;
  // B: network: preprocessed + padded data, fp16 accumulators and weights, per-fold fp16 logits, the average.
  const uint64_t b = sat_mul(C * 4, P) + sat_mul(C * 4, Pp) + sat_mul(K * 2, Pp) + 2 * Pp + sat_mul(F * K * 2, P) +
                     sat_mul(K * 2, P);
  // C: export: logits, resampled fp16 logits, double scratch, softmax in the crop, un-cropped and transposed
  //    probabilities, segmentation (+ copy).
  const uint64_t c = sat_mul(K * 2, P) + sat_mul(K * 2, N) + 16 * N + sat_mul(K * 4, N) +
                     (save_probabilities ? sat_mul(K * 8, N) : 0) + 4 * N;
  return std::max({a, b, c});
}

// ---------------------------------------------------------------------------------------------- predictor

Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;
Predictor::~Predictor() = default;

Predictor Predictor::load(const std::string& model_folder, const PredictorOptions& options) {
  if (!(options.step_size > 0 && options.step_size <= 1))
    bad_input("step size must be in (0, 1], got " + std::to_string(options.step_size));
  if (options.threads < 0) bad_input("threads must be >= 0, got " + std::to_string(options.threads));
  if (!fs::is_directory(model_folder)) seg_fail(ErrorCode::InvalidModel, "model folder '" + model_folder + "' does not exist");
  Predictor p;
  p.opt_ = options;
  p.cfg_ = load_model_folder(model_folder, options.folds, options.checkpoint);
  target_spacing(p.cfg_, Spacing{1, 1, 1});  // checks that spacing and patch size agree (2d or 3d)
  const size_t pdims = p.cfg_.patch_size.size();
  if (options.postprocess) {
    bool found = false;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(model_folder, ec))
      if (e.is_directory() && e.path().filename().string().rfind("crossval_results", 0) == 0 &&
          (fs::exists(e.path() / "postprocessing.pkl") || fs::exists(e.path() / "postprocessing.json")))
        found = true;
    if (!found)
      seg_fail(ErrorCode::InvalidModel, "postprocessing requested but model folder '" + model_folder +
                                            "' has no crossval_results_*/postprocessing.pkl (or .json); run "
                                            "nnUNetv2_find_best_configuration first or predict without it");
  } else {
    p.cfg_.postprocessing.clear();
  }
  SessionOptions so;
  // The folds run one after the other: one arena for all of them instead of one each.
  so.arena = std::make_shared<Arena>();
  so.threads = options.threads;
  for (size_t f = 0; f < p.cfg_.onnx_paths.size(); ++f) {
    std::unique_ptr<Session> s;
    Status st = Session::load(p.cfg_.onnx_paths[f], so, &s);
    if (!st.ok())
      seg_fail(st.code() == ErrorCode::Unsupported ? ErrorCode::Unsupported : ErrorCode::InvalidModel,
               "fold " + std::to_string(p.cfg_.folds[f]) + ": cannot load '" + p.cfg_.onnx_paths[f] + "': " + st.message());
    const auto& in = s->inputs();
    if (in.empty()) seg_fail(ErrorCode::InvalidModel, "'" + p.cfg_.onnx_paths[f] + "' has no inputs");
    if (in[0].has_shape &&
        (in[0].dims.size() != pdims + 2 || (in[0].dims[1] >= 0 && in[0].dims[1] != p.cfg_.num_input_channels)))
      seg_fail(ErrorCode::InvalidModel, "'" + p.cfg_.onnx_paths[f] + "': input " + in[0].name + " is " + in[0].shape_str() +
                                            ", expected (N, " + std::to_string(p.cfg_.num_input_channels) +
                                            (pdims == 2 ? ", x, y) (a 2D network, configuration '" + p.cfg_.configuration + "' is 2d)"
                                                        : std::string(", x, y, z)")) +
                                            " for the " + std::to_string(p.cfg_.num_input_channels) +
                                            " channel(s) of dataset.json");
    if (f == 0) {
      // Shapes of every activation for one batch of tiles (symbolic pass, nothing is run or allocated).
      try {
        const int64_t views = options.mirroring ? int64_t{1} << p.cfg_.mirror_axes.size() : 1;
        const int64_t b = std::min<int64_t>(views, std::max(options.max_batch, 1));
        Shape in_shape{b, (int64_t)p.cfg_.num_input_channels};
        in_shape.insert(in_shape.end(), p.cfg_.patch_size.begin(), p.cfg_.patch_size.end());
        ShapePlan sp = s->plan().analyze({TensorType::of(DType::Float32, in_shape)}, false);
        for (size_t v = 0; v < sp.types.size(); ++v) {
          if (!sp.constants[v].empty() || !sp.types[v].fully_known()) continue;
          const Shape sh = sp.types[v].concrete();
          uint64_t n = dtype_size(sp.types[v].dtype);
          for (int64_t d : sh) n = sat_mul(n, (uint64_t)std::max<int64_t>(d, 0));
          p.largest_activation_bytes_ = std::max(p.largest_activation_bytes_, n);
        }
      } catch (const std::exception&) {
        p.largest_activation_bytes_ = 0;  // unknown: the estimate then covers the data only
      }
    }
    p.nets_.push_back(std::move(s));
  }
  return p;
}

PreprocessedCase Predictor::preprocess(const CaseImage& img) const {
  if (img.data.rank() != 4 || img.data.dtype() != DType::Float32)
    bad_input("preprocess: expected float32 (C, k, j, i), got " + shape_str(img.data.shape()));
  if (img.data.dim(0) != cfg_.num_input_channels)
    bad_input("case '" + img.id + "' has " + std::to_string(img.data.dim(0)) + " channel(s), the model takes " +
              std::to_string(cfg_.num_input_channels));
  PreprocessedCase out;
  Tensor tr = transpose_volume(img.data, cfg_.transpose_forward);
  const Spacing sp = transpose_spacing(img.spacing, cfg_.transpose_forward);
  out.geometry.shape_before_cropping = spatial_shape(tr);
  out.geometry.original_spacing = sp;
  CropResult cr = crop_to_nonzero(tr);
  tr = Tensor();
  out.geometry.bbox = cr.bbox;
  out.geometry.shape_after_cropping = spatial_shape(cr.data);
  const int64_t vol = cr.mask.numel();
  for (int c = 0; c < cfg_.num_input_channels; ++c) {
    auto it = cfg_.intensity_properties.find(c);
    IntensityProperties props = it == cfg_.intensity_properties.end() ? IntensityProperties{} : it->second;
    normalize_channel(cr.data.data<float>() + c * vol, vol, cfg_.normalization_schemes.at((size_t)c),
                      cfg_.use_mask_for_norm.at((size_t)c), cr.mask.data<uint8_t>(), props);
  }
  const Spacing target = target_spacing(cfg_, sp);
  const Shape3 ns = compute_new_shape(out.geometry.shape_after_cropping, sp, target);
  out.data = resample_to_shape(cr.data, ns, sp, target, cfg_.resample_data);
  return out;
}

Tensor Predictor::predict_logits(const Tensor& pre, int64_t* evaluations, int64_t* tiles_per_fold) {
  if (pre.rank() != 4) bad_input("predict_logits: expected the preprocessed (C, X, Y, Z) tensor, got " + shape_str(pre.shape()));
  const bool is_2d = cfg_.patch_size.size() == 2;
  SlidingWindowOptions sw;
  sw.step_size = opt_.step_size;
  sw.mirror_axes = opt_.mirroring ? cfg_.mirror_axes : std::vector<int>{};  // axes of the patch (2 or 3 of them)
  sw.max_batch = opt_.max_batch;
  const int64_t tiles = (int64_t)plan_tiles(spatial_shape(pre), cfg_.patch_size, opt_.step_size).starts.size();
  const int64_t views = int64_t{1} << sw.mirror_axes.size();
  std::vector<Tensor> folds;
  for (size_t f = 0; f < nets_.size(); ++f) {
    if (opt_.progress) {
      const int fi = (int)f, nf = (int)nets_.size();
      auto cb = opt_.progress;
      sw.progress = [cb, fi, nf](int done, int total) { cb(fi, nf, done, total); };
    }
    if (is_2d)
      folds.push_back(predict_sliding_window_2d(*nets_[f], pre, {cfg_.patch_size[0], cfg_.patch_size[1]}, sw));
    else
      folds.push_back(
          predict_sliding_window(*nets_[f], pre, {cfg_.patch_size[0], cfg_.patch_size[1], cfg_.patch_size[2]}, sw));
    if (evaluations) *evaluations += tiles * views;
  }
  if (tiles_per_fold) *tiles_per_fold = tiles;
  if (folds.size() == 1) return std::move(folds[0]);
  return average_folds_fp16(folds);
}

ExportResult Predictor::export_case(const Tensor& logits, const CaseGeometry& geom) const {
  return export_prediction(logits, cfg_, geom, opt_.save_probabilities);
}

void Predictor::postprocess(Tensor& seg) const { apply_postprocessing(seg, cfg_.postprocessing); }

void Predictor::check_memory(const CaseFiles& files) const {
  if (files.channels.empty()) bad_input("case '" + files.id + "' has no channel files");
  NiftiGeometry g0;
  for (size_t c = 0; c < files.channels.size(); ++c) {
    if (!fs::exists(files.channels[c])) bad_input("case '" + files.id + "': missing channel file '" + files.channels[c] + "'");
    NiftiGeometry g = peek_nifti_geometry(files.channels[c]);
    if (c == 0) {
      g0 = g;
      continue;
    }
    if (g.shape != g0.shape)
      bad_input("case '" + files.id + "': channel files '" + files.channels[0] + "' and '" + files.channels[c] +
                "' have different shapes " + shape3_str(g0.shape) + " and " + shape3_str(g.shape) +
                " (reader order k, j, i); all channels of a case must be on the same grid");
    if (!allclose(g.spacing, g0.spacing))
      bad_input("case '" + files.id + "': channel files '" + files.channels[0] + "' and '" + files.channels[c] +
                "' have different spacings " + spacing_str(g0.spacing) + " and " + spacing_str(g.spacing) +
                " (reader order; compared as numpy.allclose, rtol 1e-5)");
  }
  const uint64_t data_est =
      estimate_peak_bytes(cfg_, (int)files.channels.size(), g0.shape, g0.spacing, opt_.save_probabilities);
  const uint64_t net_est = network_bytes_estimate();
  const uint64_t est = data_est + net_est;
  const uint64_t limit = opt_.memory_limit_bytes ? opt_.memory_limit_bytes : available_memory_bytes();
  if (limit > 0 && est > limit)
    bad_input("case '" + files.id + "': the volume " + shape3_str(g0.shape) + " x " + std::to_string(files.channels.size()) +
              " channel(s) needs an estimated peak of " + gib((double)est) + " of memory (" + gib((double)data_est) +
              " for the volumes, " + gib((double)net_est) + " for the network), more than the " + gib((double)limit) +
              (opt_.memory_limit_bytes ? " allowed (memory limit)" : " available (MemAvailable in /proc/meminfo)") +
              "; nothing was written. Crop or downsample the image, or free memory");
}

uint64_t Predictor::network_bytes_estimate() const {
  uint64_t arena = 0;
  for (const auto& n : nets_) arena = std::max<uint64_t>(arena, n->stats().arena_bytes);
  return std::max(arena, sat_mul(largest_activation_bytes_, 4));
}

CaseResult Predictor::predict_case(const CaseFiles& files) {
  check_memory(files);
  CaseResult r;
  r.id = files.id;
  auto t0 = std::chrono::steady_clock::now();
  CaseImage img = read_case(files, cfg_.image_reader_writer);
  r.times.read = ms_since(t0);
  r.affine = img.affine;
  r.spatial_dims = img.spatial_dims;

  t0 = std::chrono::steady_clock::now();
  PreprocessedCase pre = preprocess(img);
  img.data = Tensor();  // free the raw channels before the network
  r.times.preprocess = ms_since(t0);
  r.geometry = pre.geometry;
  r.preprocessed_shape = spatial_shape(pre.data);

  t0 = std::chrono::steady_clock::now();
  Tensor logits = predict_logits(pre.data, &r.network_evaluations, &r.tiles_per_fold);
  pre.data = Tensor();
  r.times.network = ms_since(t0);

  t0 = std::chrono::steady_clock::now();
  ExportResult ex = export_case(logits, r.geometry);
  logits = Tensor();
  r.times.export_ = ms_since(t0);
  r.segmentation = std::move(ex.segmentation);
  r.probabilities = std::move(ex.probabilities);

  if (!cfg_.postprocessing.empty()) {
    t0 = std::chrono::steady_clock::now();
    postprocess(r.segmentation);
    r.times.postprocess = ms_since(t0);
  }
  return r;
}

void Predictor::write_case(const CaseResult& r, const std::string& output_dir) const {
  const std::string seg_path = (fs::path(output_dir) / (r.id + cfg_.file_ending)).string();
  const std::string npz_path = (fs::path(output_dir) / (r.id + ".npz")).string();
  const bool with_probs = opt_.save_probabilities && r.probabilities.numel() > 0;
  if (with_probs) write_npz(npz_path, {{"probabilities", r.probabilities}});
  try {
    write_nifti_labels(seg_path, r.segmentation, r.affine, r.spatial_dims);
  } catch (...) {
    if (with_probs) {
      std::error_code ec;
      fs::remove(npz_path, ec);
    }
    throw;
  }
}

std::vector<CaseResult> Predictor::predict_to_files(const std::string& input, const std::string& output_dir,
                                                    const std::function<void(const CaseResult&)>& on_case) {
  std::vector<CaseFiles> cases = find_cases(input, cfg_.file_ending, cfg_.num_input_channels);
  for (const auto& c : cases) check_memory(c);  // every case's headers before the first prediction
  if (fs::exists(output_dir) && !fs::is_directory(output_dir))
    bad_input("output '" + output_dir + "' exists and is not a folder");
  std::vector<CaseResult> results;
  bool created = false;
  try {
    for (const auto& c : cases) {
      CaseResult r = predict_case(c);
      auto t0 = std::chrono::steady_clock::now();
      if (!fs::exists(output_dir)) {
        std::error_code ec;
        fs::create_directories(output_dir, ec);
        if (ec) seg_fail(ErrorCode::IoError, "cannot create output folder '" + output_dir + "': " + ec.message());
        created = true;
      }
      write_case(r, output_dir);
      r.times.write = ms_since(t0);
      if (on_case) on_case(r);
      r.segmentation = Tensor();
      r.probabilities = Tensor();
      results.push_back(std::move(r));
    }
  } catch (...) {
    std::error_code ec;
    if (created && results.empty()) fs::remove(output_dir, ec);  // empty: nothing of ours in it
    throw;
  }
  return results;
}

// ---------------------------------------------------------------------------------------------- dice

std::vector<std::pair<int, double>> dice_per_label(const Tensor& pred, const Tensor& gt) {
  if (pred.shape() != gt.shape())
    bad_input("dice: prediction " + shape_str(pred.shape()) + " and ground truth " + shape_str(gt.shape()) +
              " have different shapes");
  auto values = [](const Tensor& t) {
    std::vector<int> v((size_t)t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) {
      switch (t.dtype()) {
        case DType::UInt8: v[(size_t)i] = t.data<uint8_t>()[i]; break;
        case DType::UInt16: v[(size_t)i] = t.data<uint16_t>()[i]; break;
        case DType::Float32: v[(size_t)i] = (int)std::lround(t.data<float>()[i]); break;
        default: bad_input(std::string("dice: unsupported label dtype ") + dtype_name(t.dtype()));
      }
    }
    return v;
  };
  const std::vector<int> a = values(pred), b = values(gt);
  int maxl = 0;
  for (int x : a) maxl = std::max(maxl, x);
  for (int x : b) maxl = std::max(maxl, x);
  std::vector<int64_t> inter((size_t)maxl + 1, 0), na((size_t)maxl + 1, 0), nb((size_t)maxl + 1, 0);
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] > 0) ++na[(size_t)a[i]];
    if (b[i] > 0) ++nb[(size_t)b[i]];
    if (a[i] > 0 && a[i] == b[i]) ++inter[(size_t)a[i]];
  }
  std::vector<std::pair<int, double>> out;
  for (int l = 1; l <= maxl; ++l) {
    const int64_t den = na[(size_t)l] + nb[(size_t)l];
    out.push_back({l, den == 0 ? std::nan("") : 2.0 * (double)inter[(size_t)l] / (double)den});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- npz

namespace {

void put16(std::string& s, uint16_t v) {
  s.push_back((char)(v & 0xff));
  s.push_back((char)(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back((char)((v >> (8 * i)) & 0xff));
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back((char)((v >> (8 * i)) & 0xff));
}
uint16_t get16(const std::string& b, size_t o) { return (uint16_t)((uint8_t)b[o] | (uint8_t)b[o + 1] << 8); }
uint32_t get32(const std::string& b, size_t o) {
  return (uint32_t)get16(b, o) | (uint32_t)get16(b, o + 2) << 16;
}
uint64_t get64(const std::string& b, size_t o) { return (uint64_t)get32(b, o) | (uint64_t)get32(b, o + 4) << 32; }

// The .npy v1.0/2.0 header for `t` (data follows, C order, little endian).
std::string npy_header(const Tensor& t) {
  const std::string descr = npy::descr_of(t.dtype());
  if (descr.empty()) seg_fail(ErrorCode::InvalidArgument, std::string("npz: no .npy dtype for ") + dtype_name(t.dtype()));
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += std::to_string(t.shape()[i]) + (t.shape().size() == 1 ? "," : (i + 1 < t.shape().size() ? ", " : ""));
  shape += ")";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const bool v2 = dict.size() + 11 > 65535;
  const size_t pre = v2 ? 12 : 10;
  size_t total = pre + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  dict.append(total - pre - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string h("\x93NUMPY", 6);
  h.push_back(v2 ? 2 : 1);
  h.push_back(0);
  if (v2) put32(h, (uint32_t)dict.size()); else put16(h, (uint16_t)dict.size());
  return h + dict;
}

}  // namespace

void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& members) {
  const std::string tmp = temp_name(path);
  try {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) seg_fail(ErrorCode::IoError, "cannot create '" + tmp + "'");
    std::string central;
    uint64_t offset = 0;
    for (const auto& [name, t] : members) {
      const std::string fname = name + ".npy";
      const std::string head = npy_header(t);
      const uint64_t size = head.size() + t.nbytes();
      // CRC over header + data (in chunks: crc32 takes 32-bit lengths).
      uLong crc = crc32(0L, Z_NULL, 0);
      crc = crc32(crc, (const Bytef*)head.data(), (uInt)head.size());
      const char* p = (const char*)t.raw();
      for (uint64_t done = 0; done < t.nbytes();) {
        const uint64_t n = std::min<uint64_t>(t.nbytes() - done, 1u << 30);
        crc = crc32(crc, (const Bytef*)p + done, (uInt)n);
        done += n;
      }
      const bool z64 = size >= 0xffffffffu || offset >= 0xffffffffu;
      std::string local;
      put32(local, 0x04034b50);
      put16(local, z64 ? 45 : 20);
      put16(local, 0);        // flags
      put16(local, 0);        // stored
      put16(local, 0);        // time
      put16(local, 0x21);     // date 1980-01-01
      put32(local, (uint32_t)crc);
      put32(local, z64 ? 0xffffffffu : (uint32_t)size);
      put32(local, z64 ? 0xffffffffu : (uint32_t)size);
      put16(local, (uint16_t)fname.size());
      put16(local, z64 ? 20 : 0);
      local += fname;
      if (z64) {
        put16(local, 0x0001);
        put16(local, 16);
        put64(local, size);
        put64(local, size);
      }
      f.write(local.data(), (std::streamsize)local.size());
      f.write(head.data(), (std::streamsize)head.size());
      for (uint64_t done = 0; done < t.nbytes();) {
        const uint64_t n = std::min<uint64_t>(t.nbytes() - done, 1u << 30);
        f.write(p + done, (std::streamsize)n);
        done += n;
      }
      put32(central, 0x02014b50);
      put16(central, z64 ? 45 : 20);
      put16(central, z64 ? 45 : 20);
      put16(central, 0);
      put16(central, 0);
      put16(central, 0);
      put16(central, 0x21);
      put32(central, (uint32_t)crc);
      put32(central, z64 ? 0xffffffffu : (uint32_t)size);
      put32(central, z64 ? 0xffffffffu : (uint32_t)size);
      put16(central, (uint16_t)fname.size());
      put16(central, z64 ? 28 : 0);
      put16(central, 0);  // comment
      put16(central, 0);  // disk
      put16(central, 0);  // internal attributes
      put32(central, 0);  // external attributes
      put32(central, z64 ? 0xffffffffu : (uint32_t)offset);
      central += fname;
      if (z64) {
        put16(central, 0x0001);
        put16(central, 24);
        put64(central, size);
        put64(central, size);
        put64(central, offset);
      }
      offset += local.size() + size;
    }
    const uint64_t cd_offset = offset, cd_size = central.size(), entries = members.size();
    const bool z64 = cd_offset >= 0xffffffffu || entries >= 0xffff;
    std::string tail = central;
    if (z64) {
      put32(tail, 0x06064b50);  // zip64 end of central directory record
      put64(tail, 44);
      put16(tail, 45);
      put16(tail, 45);
      put32(tail, 0);
      put32(tail, 0);
      put64(tail, entries);
      put64(tail, entries);
      put64(tail, cd_size);
      put64(tail, cd_offset);
      put32(tail, 0x07064b50);  // locator
      put32(tail, 0);
      put64(tail, cd_offset + cd_size);
      put32(tail, 1);
    }
    put32(tail, 0x06054b50);
    put16(tail, 0);
    put16(tail, 0);
    put16(tail, z64 ? 0xffff : (uint16_t)entries);
    put16(tail, z64 ? 0xffff : (uint16_t)entries);
    put32(tail, z64 ? 0xffffffffu : (uint32_t)cd_size);
    put32(tail, z64 ? 0xffffffffu : (uint32_t)cd_offset);
    put16(tail, 0);
    f.write(tail.data(), (std::streamsize)tail.size());
    f.close();
    if (!f) seg_fail(ErrorCode::IoError, "cannot write '" + tmp + "' (disk full?)");
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) seg_fail(ErrorCode::IoError, "cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

Tensor read_npz_member(const std::string& path, const std::string& member) {
  std::ifstream f(path, std::ios::binary);
  if (!f) seg_fail(ErrorCode::IoError, "cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string z = ss.str();
  auto broken = [&](const std::string& what) -> void { bad_input("'" + path + "' is not a readable .npz: " + what); };
  if (z.size() < 22) broken("too small for a zip file");
  size_t eocd = std::string::npos;
  const size_t lo = z.size() > 22 + 65535 ? z.size() - 22 - 65535 : 0;
  for (size_t o = z.size() - 22 + 1; o-- > lo;)
    if (get32(z, o) == 0x06054b50) {
      eocd = o;
      break;
    }
  if (eocd == std::string::npos) broken("no end of central directory");
  uint64_t entries = get16(z, eocd + 10), cd = get32(z, eocd + 16);
  if ((cd == 0xffffffffu || entries == 0xffff) && eocd >= 20 && get32(z, eocd - 20) == 0x07064b50) {
    const uint64_t rec = get64(z, eocd - 20 + 8);
    if (rec + 56 > z.size() || get32(z, rec) != 0x06064b50) broken("bad zip64 end record");
    entries = get64(z, rec + 32);
    cd = get64(z, rec + 48);
  }
  size_t p = cd;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p + 46 > z.size() || get32(z, p) != 0x02014b50) broken("bad central directory entry");
    const uint16_t method = get16(z, p + 10);
    uint64_t csize = get32(z, p + 20), usize = get32(z, p + 24), local = get32(z, p + 42);
    const uint16_t nlen = get16(z, p + 28), xlen = get16(z, p + 30), clen = get16(z, p + 32);
    if (p + 46 + nlen + xlen > z.size()) broken("truncated central directory");
    const std::string name = z.substr(p + 46, nlen);
    // zip64 extra: the fields that are 0xffffffff, in order usize, csize, offset
    for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
      const uint16_t id = get16(z, x), len = get16(z, x + 2);
      if (id == 0x0001) {
        size_t q = x + 4;
        if (usize == 0xffffffffu) usize = get64(z, q), q += 8;
        if (csize == 0xffffffffu) csize = get64(z, q), q += 8;
        if (local == 0xffffffffu) local = get64(z, q), q += 8;
      }
      x += 4 + len;
    }
    p += 46 + (size_t)nlen + xlen + clen;
    if (name != member + ".npy") continue;
    if (local + 30 > z.size() || get32(z, local) != 0x04034b50) broken("bad local header of " + name);
    const uint64_t data = local + 30 + get16(z, local + 26) + get16(z, local + 28);
    if (data + csize > z.size()) broken("member " + name + " is truncated");
    std::string out;
    if (method == 0) {
      out = z.substr(data, csize);
    } else if (method == 8) {
      out.resize(usize);
      z_stream zs{};
      if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) broken("inflateInit2 failed");
      const Bytef* in = (const Bytef*)z.data() + data;
      uint64_t in_left = csize, out_done = 0;
      int rc = Z_OK;
      while (rc == Z_OK) {
        const uInt ci = (uInt)std::min<uint64_t>(in_left, 1u << 30), co = (uInt)std::min<uint64_t>(usize - out_done, 1u << 30);
        zs.next_in = (Bytef*)in;
        zs.avail_in = ci;
        zs.next_out = (Bytef*)out.data() + out_done;
        zs.avail_out = co;
        rc = inflate(&zs, Z_NO_FLUSH);
        in += ci - zs.avail_in;
        in_left -= ci - zs.avail_in;
        out_done += co - zs.avail_out;
        if (rc == Z_OK && ci == zs.avail_in && co == zs.avail_out) break;  // no progress
      }
      inflateEnd(&zs);
      if (rc != Z_STREAM_END || out_done != usize) broken("member " + name + " does not inflate");
    } else {
      broken("member " + name + " uses zip method " + std::to_string(method) + " (only stored and deflate)");
    }
    return npy::parse(out, path + ":" + name);
  }
  bad_input("'" + path + "' has no member '" + member + "'");
}

}  // namespace kiln::seg
