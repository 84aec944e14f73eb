// kiln segment -m MODEL_FOLDER -i INPUT -o OUTPUT: nnU-Net v2 prediction (nnUNetv2_predict) with kiln as the
// network runtime — a progress bar over tiles on a terminal, a summary of the time per stage, optional
// probabilities (.npz), postprocessing, a PNG preview and Dice against a ground truth.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "pipeline/seg/nifti.h"
#include "pipeline/seg/predictor.h"
#include "pipeline/seg/preview.h"

namespace kiln::cli {

namespace {

namespace fs = std::filesystem;

struct SegmentOptions {
  std::string model, input, output, preview, dice, checkpoint = "checkpoint_final.pth";
  std::vector<int> folds;
  double step = 0.5;
  bool no_mirroring = false, save_probabilities = false, postprocess = false;
  int threads = 0;
  double memory_limit_mb = 0;
};

std::string fmt_s(double ms) {
  char b[32];
  if (ms >= 1000)
    std::snprintf(b, sizeof b, "%.2f s", ms / 1000);
  else
    std::snprintf(b, sizeof b, "%.0f ms", ms);
  return b;
}

int segment_command(const SegmentOptions& o) {
  seg::PredictorOptions po;
  po.folds = o.folds;
  po.checkpoint = o.checkpoint;
  po.step_size = o.step;
  po.mirroring = !o.no_mirroring;
  po.threads = o.threads;
  po.save_probabilities = o.save_probabilities;
  po.postprocess = o.postprocess;
  if (o.memory_limit_mb < 0) usage_error("--memory-limit must be >= 0");
  po.memory_limit_bytes = (uint64_t)(o.memory_limit_mb * 1024 * 1024);

  // The progress bar (terminal only) reads the case list, filled after loading.
  std::vector<seg::CaseFiles> cases;
  size_t case_index = 0;
  if (::isatty(2) == 1) {
    po.progress = [&](int fold, int folds, int done, int total) {
      const int width = 30;
      const int fill = total > 0 ? done * width / total : width;
      const std::string id = cases.empty() ? "" : cases[std::min(case_index, cases.size() - 1)].id;
      std::fprintf(stderr, "\r%s  fold %d/%d [%s%s] %d/%d tiles ", id.c_str(), fold + 1, folds,
                   std::string((size_t)fill, '#').c_str(), std::string((size_t)(width - fill), '.').c_str(), done, total);
      if (done == total && fold + 1 == folds) std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
    };
  }

  const double t_load0 = now_ms();
  seg::Predictor pred = seg::Predictor::load(o.model, po);
  const double load_ms = now_ms() - t_load0;
  const auto& cfg = pred.config();

  // The cases (checked again by predict_to_files) — for the progress bar and the --dice file.
  cases = seg::find_cases(o.input, cfg.file_ending, cfg.num_input_channels);
  if (!o.dice.empty()) {
    if (!fs::exists(o.dice)) usage_error("--dice: ground truth '" + o.dice + "' does not exist");
    if (!fs::is_directory(o.dice) && cases.size() != 1)
      usage_error("--dice: '" + o.dice + "' is one file but the input has " + std::to_string(cases.size()) +
                  " cases; give a folder with <case>" + cfg.file_ending);
  }

  std::printf("kiln segment: model %s (%s), %zu fold(s) [", cfg.folder.c_str(), cfg.configuration.c_str(), cfg.folds.size());
  for (size_t i = 0; i < cfg.folds.size(); ++i) std::printf("%s%d", i ? " " : "", cfg.folds[i]);
  std::string patch;
  for (size_t i = 0; i < cfg.patch_size.size(); ++i) patch += (i ? ", " : "") + std::to_string(cfg.patch_size[i]);
  std::printf("], patch (%s)%s, mirroring %s, step %.2f, %zu case(s), loaded in %s\n", patch.c_str(),
              cfg.is_2d ? " per slice" : "", (po.mirroring && !cfg.mirror_axes.empty()) ? "on" : "off", po.step_size,
              cases.size(), fmt_s(load_ms).c_str());
  std::fflush(stdout);

  bool preview_done = false;
  std::vector<std::string> dice_lines;
  auto on_case = [&](const seg::CaseResult& r) {
    ++case_index;
    if (!o.preview.empty() && !preview_done) {
      seg::NiftiImage first = seg::read_nifti(cases[case_index - 1].channels[0], /*allow_2d=*/true);
      seg::write_preview_png(o.preview, first.data, r.segmentation, first.spacing);
      preview_done = true;
    }
    if (!o.dice.empty()) {
      const std::string gt = fs::is_directory(o.dice) ? (fs::path(o.dice) / (r.id + cfg.file_ending)).string() : o.dice;
      if (!fs::exists(gt)) {
        dice_lines.push_back(r.id + ": no ground truth '" + gt + "'");
        return;
      }
      seg::NiftiImage g = seg::read_nifti(gt, /*allow_2d=*/true);
      std::string line = r.id + ":";
      double sum = 0;
      int n = 0;
      for (auto [label, d] : seg::dice_per_label(r.segmentation, g.data)) {
        char b[64];
        std::snprintf(b, sizeof b, " label %d %.4f", label, d);
        line += b;
        if (!std::isnan(d)) sum += d, ++n;
      }
      if (n) {
        char b[64];
        std::snprintf(b, sizeof b, "  (mean %.4f)", sum / n);
        line += b;
      }
      dice_lines.push_back(line);
    }
  };
  const std::vector<seg::CaseResult> results = pred.predict_to_files(o.input, o.output, on_case);

  std::printf("%-16s %9s %11s %11s %9s %12s %9s %10s  %s\n", "case", "read", "preprocess", "network", "export",
              "postprocess", "write", "total", "network evaluations");
  for (const auto& r : results) {
    char ev[128];
    std::snprintf(ev, sizeof ev, "%lld (%lld tiles x %lld views x %d folds)", (long long)r.network_evaluations,
                  (long long)r.tiles_per_fold,
                  r.tiles_per_fold > 0 && pred.num_folds() > 0
                      ? (long long)(r.network_evaluations / r.tiles_per_fold / pred.num_folds())
                      : 0LL,
                  pred.num_folds());
    std::printf("%-16s %9s %11s %11s %9s %12s %9s %10s  %s\n", r.id.c_str(), fmt_s(r.times.read).c_str(),
                fmt_s(r.times.preprocess).c_str(), fmt_s(r.times.network).c_str(), fmt_s(r.times.export_).c_str(),
                r.times.postprocess > 0 ? fmt_s(r.times.postprocess).c_str() : "-", fmt_s(r.times.write).c_str(),
                fmt_s(r.times.total()).c_str(), ev);
  }
  for (const auto& l : dice_lines) std::printf("dice %s\n", l.c_str());
  std::printf("output: %s (%zu case(s)%s)%s%s\n", o.output.c_str(), results.size(),
              po.save_probabilities ? ", with <case>.npz probabilities" : "", o.preview.empty() ? "" : ", preview: ",
              o.preview.c_str());
  std::printf("peak RSS: %.1f MiB\n", peak_rss_mb());
  return kExitOk;
}

}  // namespace

void add_segment_command(CLI::App& app, int* rc) {
  auto o = std::make_shared<SegmentOptions>();
  CLI::App* sub = app.add_subcommand(
      "segment", "nnU-Net v2 segmentation (like nnUNetv2_predict) with the folds' networks exported to fold_X/model.onnx");
  sub->add_option("-m,--model", o->model, "trained model folder (plans.json, dataset.json, fold_X/)")->required();
  sub->add_option("-i,--input", o->input, "folder of cases <case>_XXXX<ending>, or one channel file")->required();
  sub->add_option("-o,--output", o->output, "output folder (created): <case><ending>, <case>.npz")->required();
  sub->add_option("-f,--folds", o->folds, "folds to ensemble (default: every fold_X with a checkpoint)")->expected(1, -1);
  sub->add_option("--step", o->step, "tile step size as a fraction of the patch (nnU-Net -step_size)")->capture_default_str();
  sub->add_flag("--no-mirroring", o->no_mirroring, "no mirroring test-time augmentation (nnU-Net --disable_tta)");
  sub->add_flag("--save-probabilities", o->save_probabilities, "also write <case>.npz with key 'probabilities'");
  sub->add_flag("--postprocess", o->postprocess, "apply crossval_results_*/postprocessing.pkl of the model folder");
  sub->add_option("--threads", o->threads, "threads per network (0: all cores)")->capture_default_str();
  sub->add_option("--preview", o->preview, "write a PNG of the first case: 3 middle slices with the mask overlaid");
  sub->add_option("--dice", o->dice, "ground-truth label file (one case) or folder with <case><ending>: print Dice");
  sub->add_option("--chk", o->checkpoint, "checkpoint name inside fold_X (nnU-Net -chk)")->capture_default_str();
  sub->add_option("--memory-limit", o->memory_limit_mb,
                  "refuse cases whose estimated peak memory exceeds this many MiB (default: MemAvailable)");
  add_command(app, sub, [o] { return segment_command(*o); }, rc);
}

}  // namespace kiln::cli
