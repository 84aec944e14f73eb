// nnU-Net v2 prediction as a library (segmentation-pipeline.md 22): the stages of pipeline/seg/* chained into
// one predictor that a CLI, a server or another program can call. Each stage is also callable on its own
// (read_case, preprocess, predict_logits, export_case, postprocess) so it can be checked against nnU-Net's
// intermediates.
//
//   auto p = kiln::seg::Predictor::load(model_folder, opts);
//   kiln::seg::CaseResult r = p.predict_case(case_files);        // in memory
//   p.predict_to_files(input, output_dir);                        // folder of cases or one channel file
//
// Errors are kiln::Error: InvalidArgument for bad input (missing channel files, mismatched channel shapes or
// spacings, NaN/Inf voxels, a volume too large for the available memory), InvalidModel for a bad model folder,
// IoError for files that cannot be written. Output files are written atomically (temporary file + rename); on
// any error no partial output file of the failing case is left behind.
#pragma once
#include <functional>
#include <memory>

#include "kiln/session.h"
#include "pipeline/seg/export.h"
#include "pipeline/seg/model_folder.h"
#include "pipeline/seg/nifti.h"

namespace kiln::seg {

struct PredictorOptions {
  std::vector<int> folds;              // empty: every fold_X with a checkpoint (nnUNetv2_predict -f)
  std::string checkpoint = "checkpoint_final.pth";  // -chk
  double step_size = 0.5;              // -step_size
  bool mirroring = true;               // false: --disable_tta
  int threads = 0;                     // per network session; 0 = all cores
  bool save_probabilities = false;     // --save_probabilities: <case>.npz, key 'probabilities'
  bool postprocess = false;            // apply the model folder's postprocessing.pkl/json after export
  int max_batch = 8;                   // network evaluations per Session::run (mirrored views batched)
  // Memory limit for the pre-flight estimate in bytes; 0 = MemAvailable of /proc/meminfo (no check if unknown).
  uint64_t memory_limit_bytes = 0;
  // Progress over tiles: (fold index in the run, number of folds, tiles done, tiles total).
  std::function<void(int fold, int folds, int done, int total)> progress;
};

// Wall time per stage in milliseconds.
struct StageTimes {
  double read = 0, preprocess = 0, network = 0, export_ = 0, postprocess = 0, write = 0;
  double total() const { return read + preprocess + network + export_ + postprocess + write; }
};

// A case as read: channels stacked in reader order, with the first channel's geometry.
struct CaseImage {
  std::string id;
  Tensor data;                          // float32 (C, k, j, i)
  Spacing spacing{};                    // reader order
  std::array<double, 16> affine{};      // of the first channel
  std::vector<std::string> channel_paths;
  int spatial_dims = 3;                 // 2 for a 2-D image file (read as one slice, SimpleITKIO only)
};

struct PreprocessedCase {
  Tensor data;                          // float32 (C, X', Y', Z'): the tensor handed to the sliding window
  CaseGeometry geometry;
};

struct CaseResult {
  std::string id;
  Tensor segmentation;                  // uint8/uint16, reader order; postprocessed if requested
  Tensor probabilities;                 // float32 (K, reader order) if save_probabilities, else empty
  std::array<double, 16> affine{};      // output affine = the input's
  int spatial_dims = 3;                 // the input file's: a 2-D input gets a 2-D output file
  CaseGeometry geometry;
  Shape3 preprocessed_shape{};
  int64_t tiles_per_fold = 0;
  int64_t network_evaluations = 0;      // tiles x views x folds
  StageTimes times;
};

// Reads channel files and checks them: all present, same shape, allclose spacings (rtol 1e-5, atol 1e-8 as
// numpy), finite voxels. Errors name the files. `image_reader_writer` (plans) only matters for 2-D files:
// SimpleITKIO reads them as one slice with slice spacing 999 x the largest in-plane spacing, NibabelIO refuses them.
CaseImage read_case(const CaseFiles& files, const std::string& image_reader_writer = "SimpleITKIO");

// The pre-flight peak-memory estimate (bytes) for a case of `channels` x `reader_shape` voxels with
// `reader_spacing`: stacked input + transposed copy, cropped and resampled data, per-fold fp16 logits and the
// ensemble, export buffers (resampled logits, softmax, un-cropped probabilities, segmentation), npz buffer.
uint64_t estimate_peak_bytes(const ModelConfig& cfg, int channels, const Shape3& reader_shape,
                             const Spacing& reader_spacing, bool save_probabilities);
// MemAvailable of /proc/meminfo in bytes, 0 if unknown.
uint64_t available_memory_bytes();

// Header only: shape (reader order) and spacing of a NIfTI file without reading its voxels.
struct NiftiGeometry {
  Shape3 shape{};
  Spacing spacing{};      // a 2-D file: (999 x max in-plane spacing, sy, sx) as SimpleITKIO
  int spatial_dims = 3;   // 2 for a 2-D file (dim[0] = 2)
};
NiftiGeometry peek_nifti_geometry(const std::string& path);

class Predictor {
 public:
  // Loads and validates the model folder, one kiln::Session per fold (threads = options.threads).
  static Predictor load(const std::string& model_folder, const PredictorOptions& options);

  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;
  ~Predictor();

  const ModelConfig& config() const { return cfg_; }
  const PredictorOptions& options() const { return opt_; }
  int num_folds() const { return (int)nets_.size(); }

  // Stage by stage.
  PreprocessedCase preprocess(const CaseImage& img) const;          // transpose, crop, normalise, resample
  // Sliding window over every fold + fold average: fp16 logits (K, X', Y', Z'). *evaluations += network runs
  // (per view), *tiles_per_fold = tiles of one fold.
  Tensor predict_logits(const Tensor& preprocessed, int64_t* evaluations = nullptr, int64_t* tiles_per_fold = nullptr);
  ExportResult export_case(const Tensor& logits_fp16, const CaseGeometry& geom) const;  // back to reader order
  void postprocess(Tensor& segmentation) const;                      // the model's postprocessing steps

  // Estimated network working memory per evaluation (bytes): before the first run 4 x the largest activation of
  // a (max_batch, C, patch) input from the plan's shape analysis (a conv's input and output plus the U-Net's
  // live skip connections); afterwards at least the arena the session actually planned.
  uint64_t network_bytes_estimate() const;

  // Checks the pre-flight memory estimate for a case (from headers only); throws InvalidArgument with the
  // estimate when it exceeds the limit.
  void check_memory(const CaseFiles& files) const;

  // All stages of one case in memory (memory check included).
  CaseResult predict_case(const CaseFiles& files);

  // Writes <case><file_ending> (and <case>.npz) into `output_dir`; `result` from predict_case.
  void write_case(const CaseResult& result, const std::string& output_dir) const;

  // `input` = folder of cases or one channel file. Creates output_dir. Returns the per-case results (without the
  // big tensors). Every case's channel files are checked (present, same shape/spacing, memory) before the first
  // prediction starts. `on_case` (optional) sees each result, tensors included, after its files are written.
  std::vector<CaseResult> predict_to_files(const std::string& input, const std::string& output_dir,
                                           const std::function<void(const CaseResult&)>& on_case = {});

 private:
  Predictor() = default;
  ModelConfig cfg_;
  PredictorOptions opt_;
  std::vector<std::unique_ptr<Session>> nets_;
  uint64_t largest_activation_bytes_ = 0;
};

// Dice per foreground label (values 1..max over both maps): 2|A&B| / (|A|+|B|), NaN when both are empty.
// Both maps reader order, same shape (uint8/uint16/float32 label values).
std::vector<std::pair<int, double>> dice_per_label(const Tensor& prediction, const Tensor& ground_truth);

// .npz (zip of .npy members, stored uncompressed) writing, atomically; reading (stored or deflated members).
void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& members);
Tensor read_npz_member(const std::string& path, const std::string& member);

}  // namespace kiln::seg
