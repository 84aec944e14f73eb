#!/usr/bin/python3
"""Export a zoo of real model architectures (random weights) to ONNX test folders.

For each model, OUT/<name>/ gets (ONNX backend-test layout):
  model.onnx                       opset 17, input "input", dynamic batch axis
  test_data_set_0/input_0.pb       random normal(0,1) input, batch 1
  test_data_set_0/output_0.pb      PyTorch's output for it
  test_data_set_1/...              the same with batch 2 (only with a dynamic batch)
  test_data_set_2/...              fully convolutional models: another spatial size (dims reversed)
  bn_stats.pt                      calibrated BatchNorm buffers (used by bench/torch_bench.py)
  meta.json                        name, kind, input_shape (benchmark shape), ...

Weights come from torch.manual_seed(0). BatchNorm running statistics are calibrated
on random batches before export so activations keep realistic magnitudes.

Usage:
  /usr/bin/python3 python/export_zoo.py --out build/zoo [--models fast|all|a,b,c] [--force]
  /usr/bin/python3 python/export_zoo.py --list-fast | --list
Already exported models (meta.json present) are skipped unless --force.
"""
import argparse
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

if __name__ == "__main__":
    # libgomp's default busy-waiting makes multi-threaded PyTorch up to ~50x slower
    # when the CPUs are oversubscribed (e.g. parallel CI jobs); must precede import torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torchvision
from onnx import numpy_helper
from torch.overrides import TorchFunctionMode
from torchvision import models as tvm

OPSET = 17
SEED = 0
CALIB_PASSES = 5
CALIB_BATCH = 2  # > 1 so BatchNorm after global pooling sees more than one value
INPUT_NAME = "input"
OUTPUT_NAME = "output"


# ---------------------------------------------------------------------------
# Model definitions
# ---------------------------------------------------------------------------

def conv_in_lrelu(cin, cout, stride):
    """Conv3d 3x3x3 + InstanceNorm3d(affine) + LeakyReLU(0.01), as in nnU-Net."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class UNet3D(nn.Module):
    """nnU-Net-style 3D U-Net: two conv blocks per stage, stride-2 conv downsampling,
    transposed-conv upsampling, skip concatenation, 1x1x1 segmentation head."""

    def __init__(self, in_channels=1, num_classes=3, features=(32, 64, 128, 256, 320)):
        super().__init__()
        self.encoder = nn.ModuleList()
        cin = in_channels
        for i, f in enumerate(features):
            self.encoder.append(nn.Sequential(
                conv_in_lrelu(cin, f, stride=1 if i == 0 else 2),
                conv_in_lrelu(f, f, stride=1)))
            cin = f
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for deep, skip in zip(features[:0:-1], features[-2::-1]):
            self.upsample.append(nn.ConvTranspose3d(deep, skip, kernel_size=2, stride=2))
            self.decoder.append(nn.Sequential(
                conv_in_lrelu(2 * skip, skip, stride=1),
                conv_in_lrelu(skip, skip, stride=1)))
        self.head = nn.Conv3d(features[0], num_classes, kernel_size=1)

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # bottleneck output
        for up, dec in zip(self.upsample, self.decoder):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class SegmentationOut(nn.Module):
    """torchvision segmentation models return a dict; keep only the 'out' tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def vit_b_16():
    model = tvm.vit_b_16(weights=None)
    model.heads.head.reset_parameters()  # torchvision zero-initialises it: constant output
    return model


def convnext_tiny():
    model = tvm.convnext_tiny(weights=None)
    # The default layer scale of 1e-6 makes every block numerically invisible in the
    # output, so a parity test could not catch errors inside the blocks.
    for block in model.modules():
        if isinstance(block, torchvision.models.convnext.CNBlock):
            nn.init.constant_(block.layer_scale, 0.1)
    return model


@dataclass
class Spec:
    build: Callable[[], nn.Module]
    input_shape: Tuple[int, ...]  # shape used for benchmarking (batch 1)
    kind: str  # classifier | segmenter | video | unet
    test_shape: Optional[Tuple[int, ...]] = None  # parity-test shape if it differs
    dynamic_spatial: bool = False  # also mark spatial dims dynamic (fully convolutional)


IMG = (1, 3, 224, 224)

MODELS = {
    "resnet18": Spec(lambda: tvm.resnet18(weights=None), IMG, "classifier"),
    "resnet50": Spec(lambda: tvm.resnet50(weights=None), IMG, "classifier"),
    "mobilenet_v2": Spec(lambda: tvm.mobilenet_v2(weights=None), IMG, "classifier"),
    "mobilenet_v3_large": Spec(lambda: tvm.mobilenet_v3_large(weights=None), IMG, "classifier"),
    "efficientnet_b0": Spec(lambda: tvm.efficientnet_b0(weights=None), IMG, "classifier"),
    "squeezenet1_1": Spec(lambda: tvm.squeezenet1_1(weights=None), IMG, "classifier"),
    "shufflenet_v2_x1_0": Spec(lambda: tvm.shufflenet_v2_x1_0(weights=None), IMG, "classifier"),
    "densenet121": Spec(lambda: tvm.densenet121(weights=None), IMG, "classifier"),
    "regnet_y_400mf": Spec(lambda: tvm.regnet_y_400mf(weights=None), IMG, "classifier"),
    "convnext_tiny": Spec(convnext_tiny, IMG, "classifier"),
    "googlenet": Spec(lambda: tvm.googlenet(weights=None, aux_logits=False, init_weights=True),
                      IMG, "classifier"),
    "vit_b_16": Spec(vit_b_16, IMG, "classifier"),
    "swin_t": Spec(lambda: tvm.swin_t(weights=None), IMG, "classifier"),
    "deeplabv3_mobilenet_v3_large": Spec(
        lambda: SegmentationOut(tvm.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, aux_loss=False)), IMG, "segmenter"),
    "fcn_resnet50": Spec(
        lambda: SegmentationOut(tvm.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, aux_loss=False)), IMG, "segmenter"),
    "r3d_18": Spec(lambda: tvm.video.r3d_18(weights=None), (1, 3, 8, 112, 112), "video"),
    "unet3d": Spec(lambda: UNet3D(features=(32, 64, 128, 256, 320)), (1, 1, 64, 128, 128),
                   "unet", test_shape=(1, 1, 32, 64, 64), dynamic_spatial=True),
    "unet3d_small": Spec(lambda: UNet3D(features=(8, 16, 32)), (1, 1, 16, 32, 32),
                         "unet", dynamic_spatial=True),
}

# Quick subset for default CI runs (each exports in a few seconds).
FAST = ["squeezenet1_1", "mobilenet_v2", "shufflenet_v2_x1_0", "resnet18", "unet3d_small"]


def resolve_models(arg):
    """Expand a --models value: 'fast', 'all', or a comma list (groups may be mixed in)."""
    names = []
    for item in filter(None, (s.strip() for s in arg.split(","))):
        group = {"fast": FAST, "all": list(MODELS)}.get(item, [item])
        names += [n for n in group if n not in names]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
    return names


# ---------------------------------------------------------------------------
# Building (shared with bench/torch_bench.py)
# ---------------------------------------------------------------------------

def batchnorm_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_buffers(model):
    """State-dict entries that belong to BatchNorm running statistics."""
    names = {n for n, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return {k: v.clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[0] in names}


def calibrate_batchnorm(model, shape):
    """Replace BatchNorm running stats by cumulative averages over random batches."""
    bns = batchnorm_layers(model)
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    with torch.no_grad():
        for _ in range(CALIB_PASSES):
            model(torch.randn((CALIB_BATCH,) + tuple(shape[1:]), generator=gen))


def build_model(name, bn_stats_path=None):
    """Build `name` with seed-0 weights in eval mode. BatchNorm statistics are loaded
    from bn_stats_path when given (as saved by an export), else calibrated here."""
    spec = MODELS[name]
    torch.manual_seed(SEED)
    model = spec.build()
    if bn_stats_path and os.path.exists(bn_stats_path):
        model.load_state_dict(torch.load(bn_stats_path), strict=False)
    else:
        calibrate_batchnorm(model, spec.input_shape)
    return model.eval()


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

class FlopCounter(TorchFunctionMode):
    """Counts 2 * multiply-accumulates of convolutions, linear layers, matmuls and
    multi-head attention while active (elementwise ops are not counted)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "linear":
            self.flops += 2 * out.numel() * args[1].shape[1]
        elif name in ("matmul", "__matmul__", "bmm"):
            self.flops += 2 * out.numel() * args[0].shape[-1]
        elif name in ("conv1d", "conv2d", "conv3d"):
            self.flops += 2 * out.numel() * args[1][0].numel()
        elif name.startswith("conv_transpose"):
            weight = args[1]  # [Cin, Cout/groups, k...]: each input scatters over Cout/groups*k
            self.flops += 2 * args[0].numel() * weight[0].numel()
        elif name == "multi_head_attention_forward":
            seq, batch, embed = args[0].shape  # self-attention: input, QK^T, AV, output proj
            self.flops += 2 * batch * seq * (4 * embed * embed + 2 * seq * embed)
        return out


def count_flops(model, x):
    counter = FlopCounter()
    with torch.no_grad(), counter:
        model(x)
    return counter.flops


def random_input(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def write_tensor(path, array, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(array), name).SerializeToString())


def write_test_set(folder, model, x):
    os.makedirs(folder)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    if not np.isfinite(y).all():
        raise RuntimeError("PyTorch output contains non-finite values")
    write_tensor(os.path.join(folder, "input_0.pb"), x, INPUT_NAME)
    write_tensor(os.path.join(folder, "output_0.pb"), y, OUTPUT_NAME)


def onnx_export(model, x, path, dynamic_axes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings are expected and noisy
        torch.onnx.export(model, x, path, opset_version=OPSET, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic_axes)
    onnx.checker.check_model(path)


def export_one(name, out_dir):
    """Export model `name` into out_dir/<name>. Returns the meta dict."""
    spec = MODELS[name]
    test_shape = spec.test_shape or spec.input_shape
    final_dir = os.path.join(out_dir, name)
    work_dir = final_dir + ".partial"
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)

    model = build_model(name)
    if batchnorm_layers(model):
        torch.save(bn_buffers(model), os.path.join(work_dir, "bn_stats.pt"))

    x0 = random_input(test_shape, seed=0)
    model_path = os.path.join(work_dir, "model.onnx")
    axes = {0: "batch"}
    if spec.dynamic_spatial:
        axes.update({d: f"dim{d}" for d in range(2, len(test_shape))})
    note = None
    try:
        onnx_export(model, torch.from_numpy(x0), model_path, {INPUT_NAME: axes, OUTPUT_NAME: axes})
        dynamic_batch = True
    except Exception as e:  # torch 1.13 cannot export some models with dynamic axes
        note = f"dynamic-axes export failed ({type(e).__name__}: {e}); exported with static shapes"
        print(f"  {name}: {note}", flush=True)
        onnx_export(model, torch.from_numpy(x0), model_path, None)
        dynamic_batch = False

    write_test_set(os.path.join(work_dir, "test_data_set_0"), model, x0)
    if dynamic_batch:
        x1 = random_input((2,) + tuple(test_shape[1:]), seed=1)
        write_test_set(os.path.join(work_dir, "test_data_set_1"), model, x1)
    if spec.dynamic_spatial and dynamic_batch:
        # Another spatial size for the same model file: the spatial dims in reverse order.
        x2 = random_input(tuple(test_shape[:2]) + tuple(reversed(test_shape[2:])), seed=2)
        write_test_set(os.path.join(work_dir, "test_data_set_2"), model, x2)

    # FLOPs at the benchmark shape; a fully convolutional net scales with the element count.
    flops = count_flops(model, torch.from_numpy(x0))
    flops = flops * int(np.prod(spec.input_shape)) // int(np.prod(test_shape))

    meta = {
        "name": name,
        "kind": spec.kind,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": list(spec.input_shape),
        "test_input_shape": list(test_shape),
        "dynamic_batch": dynamic_batch,
        "dynamic_spatial": spec.dynamic_spatial and dynamic_batch,
        "flops_estimate": flops,
        "params": sum(p.numel() for p in model.parameters()),
        "opset": OPSET,
        "model_bytes": os.path.getsize(model_path),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }
    if note:
        meta["note"] = note
    with open(os.path.join(work_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(work_dir, final_dir)
    return meta


def main():
    ap = argparse.ArgumentParser(description="Export random-weight models to ONNX test folders.")
    ap.add_argument("--out", default="build/zoo", help="output folder (default build/zoo)")
    ap.add_argument("--models", default="fast", help="fast, all, or a comma-separated list")
    ap.add_argument("--force", action="store_true", help="re-export models that already exist")
    ap.add_argument("--list-fast", action="store_true", help="print the fast subset and exit")
    ap.add_argument("--list", action="store_true", help="print all model names and exit")
    args = ap.parse_args()

    if args.list_fast or args.list:
        print("\n".join(FAST if args.list_fast else MODELS))
        return 0

    torch.set_num_threads(2)
    names = resolve_models(args.models)
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for name in names:
        if not args.force and os.path.exists(os.path.join(args.out, name, "meta.json")):
            print(f"{name}: already exported, skipping (use --force to redo)")
            continue
        start = time.time()
        try:
            meta = export_one(name, args.out)
        except Exception as e:
            shutil.rmtree(os.path.join(args.out, name + ".partial"), ignore_errors=True)
            print(f"{name}: FAILED after {time.time() - start:.1f}s: {type(e).__name__}: {e}",
                  flush=True)
            failed.append(name)
            continue
        print(f"{name}: exported in {time.time() - start:.1f}s, "
              f"{meta['model_bytes'] / 1e6:.1f} MB, {meta['flops_estimate'] / 1e9:.2f} GFLOPs, "
              f"dynamic batch: {meta['dynamic_batch']}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
