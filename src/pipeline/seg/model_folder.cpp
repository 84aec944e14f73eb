// Loading an nnU-Net trained-model folder (segmentation-pipeline.md 1.1-1.4, 16) and finding input cases.
#include "pipeline/seg/model_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "pipeline/seg/pickle.h"

namespace kiln::seg {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

[[noreturn]] void invalid(const std::string& msg) { seg_fail(ErrorCode::InvalidModel, msg); }
[[noreturn]] void unsupported(const std::string& msg) { seg_fail(ErrorCode::Unsupported, msg); }

json load_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) invalid("model folder: cannot open '" + p.string() + "'");
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    invalid("model folder: '" + p.string() + "' is not valid JSON: " + e.what());
  }
}

std::string join_ints(const std::vector<int>& v, const char* sep = ", ") {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

// Typed access with errors naming the file and field.
struct JsonCtx {
  std::string file;
  const json& at(const json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) invalid("model folder: '" + file + "' lacks the field " + where + key);
    return obj.at(key);
  }
  int64_t to_int(const json& v, const std::string& field) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && v.get<double>() == (double)(int64_t)v.get<double>()) return (int64_t)v.get<double>();
    invalid("model folder: '" + file + "' field " + field + " must be an integer, got " + v.dump());
  }
  double to_double(const json& v, const std::string& field) const {
    if (!v.is_number()) invalid("model folder: '" + file + "' field " + field + " must be a number, got " + v.dump());
    return v.get<double>();
  }
  std::string to_str(const json& v, const std::string& field) const {
    if (!v.is_string()) invalid("model folder: '" + file + "' field " + field + " must be a string, got " + v.dump());
    return v.get<std::string>();
  }
  const json& array(const json& v, const std::string& field) const {
    if (!v.is_array()) invalid("model folder: '" + file + "' field " + field + " must be a list, got " + v.dump());
    return v;
  }
};

// plans['configurations'][name] with inherits_from resolved (parent deep-copied, child's keys overwrite).
json resolve_configuration(const JsonCtx& cx, const json& configs, const std::string& name, std::vector<std::string>& chain) {
  if (!configs.is_object() || !configs.contains(name)) {
    std::string avail;
    if (configs.is_object())
      for (auto it = configs.begin(); it != configs.end(); ++it) avail += (avail.empty() ? "" : ", ") + it.key();
    invalid("model folder: configuration '" + name + "' (from the checkpoint's init_args) is not in '" + cx.file +
            "' (configurations: " + avail + ")");
  }
  if (std::find(chain.begin(), chain.end(), name) != chain.end())
    invalid("model folder: '" + cx.file + "': configuration inheritance cycle through '" + name + "'");
  chain.push_back(name);
  const json& c = configs.at(name);
  if (!c.is_object()) invalid("model folder: '" + cx.file + "': configuration '" + name + "' is not an object");
  if (!c.contains("inherits_from")) return c;
  json base = resolve_configuration(cx, configs, cx.to_str(c.at("inherits_from"), "configurations." + name + ".inherits_from"), chain);
  for (auto it = c.begin(); it != c.end(); ++it) base[it.key()] = it.value();
  return base;
}

ResampleOptions parse_resampling(const JsonCtx& cx, const json& cfg, const std::string& cfg_name, const std::string& which,
                                 int default_order) {
  const std::string fn_field = "resampling_fn_" + which;
  const std::string where = "configurations." + cfg_name + ".";
  ResampleOptions o;
  o.order = default_order;
  o.order_z = 0;
  if (cfg.contains(fn_field)) {
    std::string fn = cx.to_str(cfg.at(fn_field), where + fn_field);
    if (fn != "resample_data_or_seg_to_shape")
      unsupported("model folder: '" + cx.file + "' " + where + fn_field + " = '" + fn +
                  "' is not implemented (kiln implements only resample_data_or_seg_to_shape)");
  }
  const std::string kw_field = fn_field + "_kwargs";
  if (!cfg.contains(kw_field)) return o;
  const json& kw = cfg.at(kw_field);
  if (!kw.is_object()) invalid("model folder: '" + cx.file + "' " + where + kw_field + " must be an object");
  for (auto it = kw.begin(); it != kw.end(); ++it) {
    const std::string k = it.key(), f = where + kw_field + "." + k;
    if (k == "order") {
      o.order = (int)cx.to_int(it.value(), f);
      if (o.order != 0 && o.order != 1 && o.order != 3)
        unsupported("model folder: '" + cx.file + "' " + f + " = " + std::to_string(o.order) + " (kiln implements spline orders 0, 1, 3)");
    } else if (k == "order_z") {
      o.order_z = (int)cx.to_int(it.value(), f);
      if (o.order_z != 0 && o.order_z != 1)
        unsupported("model folder: '" + cx.file + "' " + f + " = " + std::to_string(o.order_z) + " (kiln implements 0 and 1)");
    } else if (k == "force_separate_z") {
      if (it.value().is_null()) o.force_separate_z.reset();
      else if (it.value().is_boolean()) o.force_separate_z = it.value().get<bool>();
      else invalid("model folder: '" + cx.file + "' " + f + " must be null, true or false");
    } else if (k == "is_seg") {
      // only selects the per-axis bookkeeping of the original function; the numeric path is set by order
    } else {
      unsupported("model folder: '" + cx.file + "' " + f + ": unknown resampling argument");
    }
  }
  return o;
}

// A label-or-region entry of postprocessing kwargs: int -> one label; tuple/list of ints -> a region.
std::vector<int> label_or_region(const PyValue& v, const std::string& where) {
  if (v.kind == PyValue::Int) return {(int)v.i};
  if (v.kind == PyValue::Tuple || v.kind == PyValue::List) {
    std::vector<int> out;
    for (const auto& e : v.items) {
      if (!e || e->kind != PyValue::Int) invalid(where + ": a region must hold integer labels");
      out.push_back((int)e->i);
    }
    return out;
  }
  invalid(where + ": labels_or_regions entries must be integers or tuples of integers");
}

std::vector<PostprocessStep> parse_postprocessing_pkl(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) invalid("model folder: cannot open '" + p.string() + "'");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto root = parse_pickle(bytes, p.string());
  const std::string where = "postprocessing file '" + p.string() + "'";
  if ((root->kind != PyValue::Tuple && root->kind != PyValue::List) || root->items.size() != 2)
    invalid(where + ": expected a tuple (functions, kwargs)");
  const PyValue& fns = *root->items[0];
  const PyValue& kws = *root->items[1];
  if (fns.kind != PyValue::List || kws.kind != PyValue::List || fns.items.size() != kws.items.size())
    invalid(where + ": expected two lists of equal length (functions, kwargs)");
  std::vector<PostprocessStep> steps;
  for (size_t s = 0; s < fns.items.size(); ++s) {
    const PyValue& fn = *fns.items[s];
    const std::string w = where + " step " + std::to_string(s);
    if (fn.kind != PyValue::Object) invalid(w + ": the function is not a global reference");
    if (fn.obj.name != "remove_all_but_largest_component_from_segmentation")
      unsupported(w + ": postprocessing function '" + fn.obj.module + "." + fn.obj.name +
                  "' is not implemented (only remove_all_but_largest_component_from_segmentation)");
    const PyValue& kw = *kws.items[s];
    if (kw.kind != PyValue::Dict) invalid(w + ": kwargs are not a dict");
    PostprocessStep step;
    for (const auto& [k, v] : kw.dict) {
      if (!k || k->kind != PyValue::Str) invalid(w + ": kwargs keys must be strings");
      if (k->s == "labels_or_regions") {
        step.labels_or_regions.clear();
        if (v->kind == PyValue::List)
          for (const auto& e : v->items) step.labels_or_regions.push_back(label_or_region(*e, w));
        else
          step.labels_or_regions.push_back(label_or_region(*v, w));
      } else if (k->s == "background_label") {
        if (v->kind != PyValue::Int || v->i != 0) unsupported(w + ": background_label other than 0 is not implemented");
      } else {
        unsupported(w + ": unknown argument '" + k->s + "'");
      }
    }
    if (!kw.get("labels_or_regions")) invalid(w + ": kwargs lack labels_or_regions");
    steps.push_back(std::move(step));
  }
  return steps;
}

std::vector<PostprocessStep> parse_postprocessing_json(const fs::path& p) {
  json j = load_json(p);
  const std::string where = "postprocessing file '" + p.string() + "'";
  if (!j.is_object() || !j.contains("postprocessing_fns") || !j.contains("postprocessing_kwargs") ||
      !j["postprocessing_fns"].is_array() || !j["postprocessing_kwargs"].is_array() ||
      j["postprocessing_fns"].size() != j["postprocessing_kwargs"].size())
    invalid(where + ": expected lists postprocessing_fns and postprocessing_kwargs of equal length");
  std::vector<PostprocessStep> steps;
  auto entry = [&](const json& e, const std::string& w) {
    if (e.is_number_integer()) return std::vector<int>{e.get<int>()};
    std::vector<int> r;
    if (!e.is_array()) invalid(w + ": labels_or_regions entries must be integers or lists of integers");
    for (const auto& x : e) {
      if (!x.is_number_integer()) invalid(w + ": a region must hold integer labels");
      r.push_back(x.get<int>());
    }
    return r;
  };
  for (size_t s = 0; s < j["postprocessing_fns"].size(); ++s) {
    const std::string w = where + " step " + std::to_string(s);
    const json& fn = j["postprocessing_fns"][s];
    std::string name = fn.is_string() ? fn.get<std::string>() : "";
    if (name.size() >= 50 && name.rfind('.') != std::string::npos) name = name.substr(name.rfind('.') + 1);
    if (name != "remove_all_but_largest_component_from_segmentation")
      unsupported(w + ": postprocessing function " + fn.dump() + " is not implemented");
    const json& kw = j["postprocessing_kwargs"][s];
    if (!kw.is_object() || !kw.contains("labels_or_regions")) invalid(w + ": kwargs lack labels_or_regions");
    PostprocessStep step;
    const json& L = kw["labels_or_regions"];
    if (L.is_array()) {
      for (const auto& e : L) step.labels_or_regions.push_back(entry(e, w));
    } else {
      step.labels_or_regions.push_back(entry(L, w));
    }
    if (kw.contains("background_label") && !(kw["background_label"].is_number_integer() && kw["background_label"].get<int>() == 0))
      unsupported(w + ": background_label other than 0 is not implemented");
    steps.push_back(std::move(step));
  }
  return steps;
}

std::vector<int> available_folds(const fs::path& folder, const std::string& checkpoint_name) {
  std::vector<int> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory() || n.rfind("fold_", 0) != 0 || n == "fold_all") continue;
    const std::string num = n.substr(5);
    if (num.empty() || num.size() > 6 || !std::all_of(num.begin(), num.end(), ::isdigit)) continue;
    if (fs::exists(e.path() / checkpoint_name)) out.push_back(std::stoi(num));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_channel_file(const std::string& name, const std::string& ending) {
  if (name.size() < ending.size() + 5 + 1) return false;
  if (name.compare(name.size() - ending.size(), ending.size(), ending) != 0) return false;
  const size_t u = name.size() - ending.size() - 5;
  if (name[u] != '_') return false;
  for (size_t i = u + 1; i < u + 5; ++i)
    if (!std::isdigit((unsigned char)name[i])) return false;
  return true;
}

}  // namespace

ModelConfig load_model_folder(const std::string& folder_str, const std::vector<int>& requested_folds,
                              const std::string& checkpoint_name) {
  const fs::path folder(folder_str);
  if (!fs::is_directory(folder)) invalid("model folder '" + folder_str + "' does not exist or is not a directory");
  ModelConfig m;
  m.folder = folder_str;

  // ---- folds
  const std::vector<int> avail = available_folds(folder, checkpoint_name);
  if (requested_folds.empty()) {
    if (avail.empty())
      invalid("model folder '" + folder_str + "' has no fold_X folder with a " + checkpoint_name);
    m.folds = avail;
  } else {
    for (int f : requested_folds) {
      if (std::find(avail.begin(), avail.end(), f) == avail.end())
        invalid("model folder '" + folder_str + "': fold " + std::to_string(f) + " not found (no fold_" + std::to_string(f) +
                "/" + checkpoint_name + "); available folds: " + (avail.empty() ? std::string("none") : join_ints(avail)));
      if (std::count(requested_folds.begin(), requested_folds.end(), f) > 1)
        invalid("fold " + std::to_string(f) + " requested more than once");
    }
    m.folds = requested_folds;
  }
  for (int f : m.folds) {
    fs::path onnx = folder / ("fold_" + std::to_string(f)) / "model.onnx";
    if (!fs::exists(onnx))
      invalid("model folder '" + folder_str + "': fold " + std::to_string(f) + " has no exported network '" + onnx.string() +
              "'. kiln runs the network from ONNX: export it once with PyTorch, e.g. load the trained network as "
              "nnUNetPredictor.initialize_from_trained_model_folder does and call torch.onnx.export(network, "
              "dummy_input_of_patch_size, 'fold_" + std::to_string(f) + "/model.onnx', input_names=['input'], "
              "output_names=['logits'], dynamic_axes={'input': {0: 'n', 2: 'x', 3: 'y', 4: 'z'}, 'logits': {0: 'n', 2: 'x', 3: 'y', 4: 'z'}}, "
              "opset_version=17) (for a 2d configuration the input is (n, channels, x, y): dynamic axes {0: 'n', 2: 'x', 3: 'y'})");
    m.onnx_paths.push_back(onnx.string());
  }

  // ---- checkpoint of the first fold
  const fs::path ckpt_path = folder / ("fold_" + std::to_string(m.folds[0])) / checkpoint_name;
  auto ckpt = read_torch_checkpoint(ckpt_path.string());
  const std::string cw = "checkpoint '" + ckpt_path.string() + "'";
  if (ckpt->kind != PyValue::Dict) invalid(cw + ": expected a dict at the top level");
  const PyValue* init_args = ckpt->get("init_args");
  if (!init_args || init_args->kind != PyValue::Dict) invalid(cw + ": lacks the dict init_args");
  const PyValue* conf = init_args->get("configuration");
  if (!conf || conf->kind != PyValue::Str) invalid(cw + ": lacks init_args['configuration'] (a string)");
  m.configuration = conf->s;
  if (const PyValue* mir = ckpt->get("inference_allowed_mirroring_axes")) {
    if (mir->kind == PyValue::Tuple || mir->kind == PyValue::List) {
      for (const auto& a : mir->items) {
        if (!a || a->kind != PyValue::Int) invalid(cw + ": inference_allowed_mirroring_axes must hold integers");
        m.mirror_axes.push_back((int)a->i);
      }
    } else if (mir->kind != PyValue::None) {
      invalid(cw + ": inference_allowed_mirroring_axes must be a tuple of axes or None");
    }
  }

  // ---- dataset.json
  const fs::path ds_path = folder / "dataset.json";
  const json ds = load_json(ds_path);
  JsonCtx dx{ds_path.string()};
  if (!ds.is_object()) invalid("model folder: '" + dx.file + "' is not a JSON object");
  const json* ch = nullptr;
  if (ds.contains("channel_names")) ch = &ds.at("channel_names");
  else if (ds.contains("modality")) ch = &ds.at("modality");
  else invalid("model folder: '" + dx.file + "' lacks channel_names (or the legacy modality)");
  if (!ch->is_object() || ch->empty()) invalid("model folder: '" + dx.file + "' channel_names must be a non-empty object");
  m.num_input_channels = (int)ch->size();
  for (int c = 0; c < m.num_input_channels; ++c)
    if (!ch->contains(std::to_string(c)))
      invalid("model folder: '" + dx.file + "' channel_names lacks channel \"" + std::to_string(c) + "\" (keys must be 0..N-1)");
  if (ds.contains("file_ending")) m.file_ending = dx.to_str(ds.at("file_ending"), "file_ending");
  const json& labels = dx.at(ds, "labels", "");
  if (!labels.is_object() || labels.empty()) invalid("model folder: '" + dx.file + "' labels must be a non-empty object");
  if (!labels.contains("background")) invalid("model folder: '" + dx.file + "' labels lack 'background'");
  std::optional<int> ignore;
  std::vector<int> all_labels;
  std::vector<std::vector<int>> regions;
  bool any_region = false;
  bool background_ok = false;
  for (auto it = labels.begin(); it != labels.end(); ++it) {
    const std::string f = "labels." + it.key();
    std::vector<int> vals;
    if (it.value().is_array()) {
      for (const auto& e : it.value()) vals.push_back((int)dx.to_int(e, f));
      if (vals.empty()) invalid("model folder: '" + dx.file + "' " + f + " is an empty list");
      if (vals.size() > 1) any_region = true;
    } else {
      vals.push_back((int)dx.to_int(it.value(), f));
    }
    for (int v : vals)
      if (v < 0) invalid("model folder: '" + dx.file + "' " + f + " is negative");
    if (it.key() == "ignore") {
      if (vals.size() != 1) invalid("model folder: '" + dx.file + "' labels.ignore must be one integer");
      ignore = vals[0];
      continue;
    }
    if (it.key() == "background") {
      background_ok = vals.size() == 1 && vals[0] == 0;
      if (!background_ok) invalid("model folder: '" + dx.file + "' labels.background must be 0");
    }
    all_labels.insert(all_labels.end(), vals.begin(), vals.end());
    if (it.key() != "background" && !(vals.size() == 1 && vals[0] == 0)) regions.push_back(vals);
  }
  std::sort(all_labels.begin(), all_labels.end());
  all_labels.erase(std::unique(all_labels.begin(), all_labels.end()), all_labels.end());
  if (ignore && !all_labels.empty() && *ignore <= all_labels.back())
    invalid("model folder: '" + dx.file + "' labels.ignore (" + std::to_string(*ignore) + ") must be larger than every other label");
  m.has_regions = any_region;
  if (m.has_regions) {
    m.regions = regions;
    const json& rco = dx.at(ds, "regions_class_order", "");
    dx.array(rco, "regions_class_order");
    for (const auto& e : rco) m.regions_class_order.push_back((int)dx.to_int(e, "regions_class_order"));
    if (m.regions_class_order.size() != m.regions.size())
      invalid("model folder: '" + dx.file + "' regions_class_order has " + std::to_string(m.regions_class_order.size()) +
              " entries for " + std::to_string(m.regions.size()) + " regions");
  } else {
    for (size_t i = 0; i < all_labels.size(); ++i)
      if (all_labels[i] != (int)i)
        invalid("model folder: '" + dx.file + "' labels must be consecutive integers 0..N-1 (got " + join_ints(all_labels) + ")");
    m.label_values = all_labels;
    if (m.label_values.size() < 2) invalid("model folder: '" + dx.file + "' needs at least one foreground label");
  }

  // ---- plans.json
  const fs::path plans_path = folder / "plans.json";
  const json plans = load_json(plans_path);
  JsonCtx px{plans_path.string()};
  if (!plans.is_object()) invalid("model folder: '" + px.file + "' is not a JSON object");
  auto perm = [&](const char* key, std::array<int, 3>& out) {
    const json& v = px.array(px.at(plans, key, ""), key);
    if (v.size() != 3) invalid("model folder: '" + px.file + "' " + key + " must have 3 entries");
    std::array<bool, 3> seen{};
    for (int d = 0; d < 3; ++d) {
      int64_t a = px.to_int(v[d], key);
      if (a < 0 || a > 2 || seen[a]) invalid("model folder: '" + px.file + "' " + key + " is not a permutation of 0, 1, 2");
      seen[a] = true;
      out[d] = (int)a;
    }
  };
  perm("transpose_forward", m.transpose_forward);
  perm("transpose_backward", m.transpose_backward);
  for (int d = 0; d < 3; ++d)
    if (m.transpose_backward[m.transpose_forward[d]] != d)
      invalid("model folder: '" + px.file + "' transpose_backward is not the inverse of transpose_forward");
  m.image_reader_writer = plans.contains("image_reader_writer") ? px.to_str(plans.at("image_reader_writer"), "image_reader_writer")
                                                               : std::string("SimpleITKIO");
  if (m.image_reader_writer != "NibabelIO" && m.image_reader_writer != "SimpleITKIO")
    unsupported("model folder: '" + px.file + "' image_reader_writer = '" + m.image_reader_writer +
                "' is not implemented (kiln reads NIfTI the way NibabelIO and SimpleITKIO do)");

  std::vector<std::string> chain;
  const json cfg = resolve_configuration(px, px.at(plans, "configurations", ""), m.configuration, chain);
  const std::string cw2 = "configurations." + m.configuration + ".";
  auto cat = [&](const char* key) -> const json& { return px.at(cfg, key, cw2); };
  {
    const json& ps = px.array(cat("patch_size"), cw2 + "patch_size");
    for (const auto& e : ps) {
      int64_t v = px.to_int(e, cw2 + "patch_size");
      if (v < 1) invalid("model folder: '" + px.file + "' " + cw2 + "patch_size entries must be positive");
      m.patch_size.push_back(v);
    }
    if (m.patch_size.size() != 2 && m.patch_size.size() != 3)
      invalid("model folder: '" + px.file + "' " + cw2 + "patch_size must have 2 or 3 entries");
    m.is_2d = m.patch_size.size() == 2;
    const json& sp = px.array(cat("spacing"), cw2 + "spacing");
    for (const auto& e : sp) {
      double v = px.to_double(e, cw2 + "spacing");
      if (!(v > 0)) invalid("model folder: '" + px.file + "' " + cw2 + "spacing entries must be positive");
      m.spacing.push_back(v);
    }
    if (m.spacing.size() != m.patch_size.size())
      invalid("model folder: '" + px.file + "' " + cw2 + "spacing and patch_size differ in length");
  }
  for (int a : m.mirror_axes)
    if (a < 0 || a >= (int)m.patch_size.size())
      invalid(cw + ": mirroring axis " + std::to_string(a) + " is out of range for a " + std::to_string(m.patch_size.size()) + "-D configuration");
  {
    const json& ns = px.array(cat("normalization_schemes"), cw2 + "normalization_schemes");
    static const std::set<std::string> known = {"CTNormalization", "ZScoreNormalization", "RescaleTo01Normalization",
                                                "RGBTo01Normalization", "NoNormalization"};
    for (const auto& e : ns) {
      std::string s = px.to_str(e, cw2 + "normalization_schemes");
      if (!known.count(s))
        unsupported("model folder: '" + px.file + "' " + cw2 + "normalization_schemes: '" + s + "' is not implemented");
      m.normalization_schemes.push_back(s);
    }
    if ((int)m.normalization_schemes.size() != m.num_input_channels)
      invalid("model folder: '" + px.file + "' " + cw2 + "normalization_schemes has " + std::to_string(m.normalization_schemes.size()) +
              " entries for " + std::to_string(m.num_input_channels) + " input channels (dataset.json)");
    const json& um = px.array(cat("use_mask_for_norm"), cw2 + "use_mask_for_norm");
    for (const auto& e : um) {
      if (!e.is_boolean()) invalid("model folder: '" + px.file + "' " + cw2 + "use_mask_for_norm entries must be booleans");
      m.use_mask_for_norm.push_back(e.get<bool>());
    }
    if (m.use_mask_for_norm.size() != m.normalization_schemes.size())
      invalid("model folder: '" + px.file + "' " + cw2 + "use_mask_for_norm and normalization_schemes differ in length");
  }
  {
    const char* key = plans.contains("foreground_intensity_properties_per_channel") ? "foreground_intensity_properties_per_channel"
                      : plans.contains("foreground_intensity_properties_by_modality") ? "foreground_intensity_properties_by_modality"
                                                                                       : nullptr;
    if (key) {
      const json& fp = plans.at(key);
      if (!fp.is_object()) invalid("model folder: '" + px.file + "' " + key + " must be an object");
      for (auto it = fp.begin(); it != fp.end(); ++it) {
        const std::string f = std::string(key) + "." + it.key();
        int c;
        try {
          size_t used = 0;
          c = std::stoi(it.key(), &used);
          if (used != it.key().size()) throw std::invalid_argument("x");
        } catch (...) {
          invalid("model folder: '" + px.file + "' " + f + ": channel keys must be integers");
        }
        IntensityProperties p;
        auto num = [&](const char* k, double& dst) {
          if (it.value().contains(k)) dst = px.to_double(it.value().at(k), f + "." + k);
        };
        num("mean", p.mean);
        num("std", p.std);
        num("percentile_00_5", p.percentile_00_5);
        num("percentile_99_5", p.percentile_99_5);
        m.intensity_properties[c] = p;
      }
    }
    for (int c = 0; c < m.num_input_channels; ++c)
      if (m.normalization_schemes[c] == "CTNormalization") {
        auto it = m.intensity_properties.find(c);
        const json* raw = key ? &plans.at(key) : nullptr;
        const std::string ck = std::to_string(c);
        if (it == m.intensity_properties.end() || !raw || !raw->contains(ck) ||
            !raw->at(ck).contains("mean") || !raw->at(ck).contains("std") || !raw->at(ck).contains("percentile_00_5") ||
            !raw->at(ck).contains("percentile_99_5"))
          invalid("model folder: '" + px.file + "': channel " + ck +
                  " uses CTNormalization but foreground_intensity_properties_per_channel." + ck +
                  " lacks mean/std/percentile_00_5/percentile_99_5");
      }
  }
  m.resample_data = parse_resampling(px, cfg, m.configuration, "data", 3);
  m.resample_probabilities = parse_resampling(px, cfg, m.configuration, "probabilities", 1);
  (void)parse_resampling(px, cfg, m.configuration, "seg", 1);  // validated only (used by cascades)
  {
    if (!cfg.contains("architecture"))
      unsupported("model folder: '" + px.file + "' " + cw2 + "architecture is missing (plans of an old nnU-Net version)");
    const json& arch = cfg.at("architecture");
    std::string cls = px.to_str(px.at(arch, "network_class_name", cw2 + "architecture."), cw2 + "architecture.network_class_name");
    std::string base = cls.substr(cls.rfind('.') == std::string::npos ? 0 : cls.rfind('.') + 1);
    if (base != "PlainConvUNet" && base != "ResidualEncoderUNet")
      unsupported("model folder: '" + px.file + "' " + cw2 + "architecture.network_class_name = '" + cls +
                  "' is not supported (PlainConvUNet, ResidualEncoderUNet)");
  }
  if (cfg.contains("previous_stage") && !cfg.at("previous_stage").is_null())
    unsupported("model folder: '" + px.file + "' configuration '" + m.configuration +
                "' is a cascade stage (previous_stage); cascades are not implemented");

  // ---- postprocessing: crossval_results_*/postprocessing.pkl (or .json); prefer the folder of the used folds
  {
    std::vector<fs::path> cands;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(folder, ec))
      if (e.is_directory() && e.path().filename().string().rfind("crossval_results", 0) == 0) cands.push_back(e.path());
    std::sort(cands.begin(), cands.end());
    const std::string preferred = "crossval_results_folds_" + join_ints(m.folds, "_");
    std::stable_partition(cands.begin(), cands.end(), [&](const fs::path& p) { return p.filename() == preferred; });
    for (const auto& c : cands) {
      if (fs::exists(c / "postprocessing.pkl")) {
        m.postprocessing = parse_postprocessing_pkl(c / "postprocessing.pkl");
        break;
      }
      if (fs::exists(c / "postprocessing.json")) {
        m.postprocessing = parse_postprocessing_json(c / "postprocessing.json");
        break;
      }
    }
  }
  return m;
}

std::vector<CaseFiles> find_cases(const std::string& input, const std::string& file_ending, int num_channels) {
  const fs::path in(input);
  if (num_channels < 1) seg_fail(ErrorCode::InvalidArgument, "find_cases: the model must take at least one channel");
  auto channel_name = [&](const std::string& id, int c) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "_%04d", c);
    return id + buf + file_ending;
  };
  std::vector<std::string> ids;
  fs::path dir;
  if (fs::is_directory(in)) {
    dir = in;
    std::set<std::string> idset;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(in, ec)) {
      if (!e.is_regular_file()) continue;
      const std::string n = e.path().filename().string();
      if (!is_channel_file(n, file_ending)) continue;
      const std::string id = n.substr(0, n.size() - file_ending.size() - 5);
      const int c = std::stoi(n.substr(id.size() + 1, 4));
      if (c >= num_channels)
        seg_fail(ErrorCode::InvalidArgument, "input file '" + (in / n).string() + "' is channel " + std::to_string(c) +
                                                 " but the model takes " + std::to_string(num_channels) + " channel(s)");
      idset.insert(id);
    }
    if (idset.empty())
      seg_fail(ErrorCode::InvalidArgument, "input folder '" + input + "' holds no files named <case>_XXXX" + file_ending);
    ids.assign(idset.begin(), idset.end());
  } else if (fs::exists(in)) {
    const std::string n = in.filename().string();
    if (!is_channel_file(n, file_ending))
      seg_fail(ErrorCode::InvalidArgument, "input file '" + input + "' is not named <case>_XXXX" + file_ending +
                                               " (XXXX = 4-digit channel index, as nnU-Net expects)");
    dir = in.parent_path();
    ids.push_back(n.substr(0, n.size() - file_ending.size() - 5));
  } else {
    seg_fail(ErrorCode::InvalidArgument, "input '" + input + "' does not exist");
  }
  std::vector<CaseFiles> cases;
  for (const auto& id : ids) {
    CaseFiles cf;
    cf.id = id;
    for (int c = 0; c < num_channels; ++c) {
      fs::path p = dir / channel_name(id, c);
      if (!fs::exists(p))
        seg_fail(ErrorCode::InvalidArgument, "case '" + id + "': missing channel file '" + p.string() + "' (the model takes " +
                                                 std::to_string(num_channels) + " channel(s): _0000 .. _" +
                                                 channel_name("", num_channels - 1).substr(1, 4) + ")");
      cf.channels.push_back(p.string());
    }
    cases.push_back(std::move(cf));
  }
  return cases;
}

}  // namespace kiln::seg
