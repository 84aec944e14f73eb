#!/usr/bin/python3
"""Train a tiny nnU-Net-style 3D segmentation network on synthetic volumes and write it as an
nnU-Net v2 trained-model folder, the demo model of `kiln segment`.

Writes (under examples/seg/ by default):
  Dataset999_DemoEllipsoids/nnUNetTrainer__nnUNetPlans__3d_fullres/
      plans.json, dataset.json                      one configuration, 3d_fullres
      fold_0/checkpoint_final.pth                   torch.save dict as nnU-Net writes it (network_weights,
                                                    trainer_name, init_args, inference_allowed_mirroring_axes)
      fold_0/model.onnx                             opset 17, input 'input' (N,1,x,y,z) -> 'logits' (N,3,x,y,z)
      crossval_results_folds_0/postprocessing.pkl   keep the largest component of label 1
      crossval_results_folds_0/postprocessing.json
  case/demo_001_0000.nii.gz                         one held-out case (int16, real affine)
  ground_truth/demo_001.nii.gz                      its label map (uint8)

The data: an MR-like body (zero outside, so nnU-Net's crop-to-non-zero applies) with one bright ellipsoid
(label 1, "organ") and one to three smaller dark ones (label 2, "cyst"), smooth multiplicative bias and Gaussian
noise, voxel spacing (2.0, 0.8, 0.8) mm in reader order; the plans' target spacing (2.0, 1.0, 1.0) makes
preprocessing resample in-plane (cubic, not separate-z since 2.0/0.8 = 2.5 <= 3).

Training mimics nnU-Net's preprocessing (crop to non-zero, ZScore inside the mask, resampling with scipy's
zoom; exact only up to what training needs — kiln does the exact version at inference), samples patches with
foreground oversampling and mirror augmentation, and minimises CE + soft Dice with Adam for a fixed number of
iterations (deterministic for a given torch build and thread count). The network reproduces the module
layout of dynamic_network_architectures' PlainConvUNet (so the state_dict keys match what nnU-Net expects) with
3 stages (8, 16, 32 features).

The script finally evaluates the trained network on the held-out case (and 4 further generated ones, not
written) with its own sliding-window inference (step 0.5, Gaussian weights, 8-way mirroring, linear resampling
of the logits back) and prints the Dice.

Recorded run (Debian torch 1.13, 2 threads, busy 2-core machine): 250 iterations in 141-221 s; Dice on
demo_001 label 1 0.9977, label 2 0.9907 (4 further cases: mean 0.9968 / 0.9743); a second run wrote
byte-identical files. Everything written is ~880 KiB (model.onnx 334 KB, checkpoint 359 KB, case 197 KB).

Usage: /usr/bin/python3 python/train_seg_demo.py [--out examples/seg] [--iters N] [--threads 2]
"""
import argparse
import json
import os
import pickle
import sys
import time
import types

if __name__ == "__main__":
    # libgomp's default busy-waiting makes multi-threaded PyTorch very slow on an oversubscribed machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 1234
DATASET = "Dataset999_DemoEllipsoids"
TRAINER_FOLDER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
SHAPE_IJK = (80, 80, 48)                 # NIfTI voxel axes (i, j, k)
SPACING_IJK = (0.8, 0.8, 2.0)            # pixdim 1..3
SPACING = tuple(float(np.float32(s)) for s in SPACING_IJK[::-1])  # reader order (z, y, x), float32-derived
TARGET_SPACING = [2.0, 1.0, 1.0]
PATCH = (32, 64, 64)
FEATURES = [8, 16, 32]
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
NUM_CLASSES = 3
LABELS = {"background": 0, "bright": 1, "dark": 2}
N_TRAIN = 32


# ----------------------------------------------------------------------------------------------- data
def make_case(rng):
    """One synthetic volume in reader order (z, y, x): (int16 image, uint8 labels)."""
    nz, ny, nx = SHAPE_IJK[::-1]
    sz, sy, sx = SPACING
    z, y, x = np.meshgrid((np.arange(nz) - (nz - 1) / 2) * sz, (np.arange(ny) - (ny - 1) / 2) * sy,
                          (np.arange(nx) - (nx - 1) / 2) * sx, indexing="ij")  # mm, centred
    # body: elliptic cylinder whose radii vary slowly along z
    ry = rng.uniform(24, 29) * (1 + 0.06 * np.cos(z / 25 + rng.uniform(0, 6)))
    rx = rng.uniform(25, 30) * (1 + 0.06 * np.sin(z / 20 + rng.uniform(0, 6)))
    cy, cx = rng.uniform(-2, 2, size=2)
    body = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    def ellipsoid(radii_mm, margin):
        # random centre well inside the body, random rotation
        for _ in range(100):
            c = np.array([rng.uniform(-28, 28), rng.uniform(-14, 14), rng.uniform(-14, 14)])
            if ((c[1] - cy) / (ry.min() - margin)) ** 2 + ((c[2] - cx) / (rx.min() - margin)) ** 2 < 1:
                break
        q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        d = np.stack([z - c[0], y - c[1], x - c[2]], -1) @ q
        return ((d / np.asarray(radii_mm)) ** 2).sum(-1) <= 1.0

    lab = np.zeros((nz, ny, nx), np.uint8)
    lab[ellipsoid(rng.uniform(7, 11, size=3), 10)] = 1
    for _ in range(rng.integers(1, 4)):
        lab[ellipsoid(rng.uniform(4.5, 8.0, size=3), 7)] = 2
    lab[~body] = 0

    img = np.full(lab.shape, 300.0)
    img[lab == 1] = rng.uniform(520, 620)
    img[lab == 2] = rng.uniform(90, 140)
    # smooth multiplicative bias field
    bias = 1.0
    for _ in range(3):
        k = rng.normal(size=3) / 60.0
        bias = bias + 0.07 * np.cos(k[0] * z + k[1] * y + k[2] * x + rng.uniform(0, 6))
    img = img * bias + rng.normal(0, 22, size=img.shape)
    img = np.where(body, np.clip(np.round(img), 1, 2000), 0).astype(np.int16)
    return img, lab


def affine_ijk():
    # a real scanner-like affine: i runs right-to-left, j anterior-to-posterior (LPS storage, shown in RAS)
    a = np.diag([-SPACING_IJK[0], -SPACING_IJK[1], SPACING_IJK[2], 1.0])
    a[:3, 3] = [31.6, 45.2, -62.0]
    return a


def save_nifti(path, arr_zyx, dtype):
    img = nib.Nifti1Image(np.ascontiguousarray(arr_zyx.transpose(2, 1, 0)).astype(dtype), affine_ijk())
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


# ----------------------------------------------------------------------------------------------- preprocessing
def crop_to_nonzero(img):
    mask = ndi.binary_fill_holes(img != 0)
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != d)))[0] for d in range(3)]
    bbox = [(int(i[0]), int(i[-1]) + 1) if len(i) else (0, n) for i, n in zip(idx, img.shape)]
    sl = tuple(slice(a, b) for a, b in bbox)
    return sl, mask[sl]


def zscore_in_mask(x, mask):
    x = x.astype(np.float32)
    m, s = x[mask].mean(), x[mask].std()
    x[mask] = (x[mask] - m) / max(s, 1e-8)
    return x


def new_shape(shape):
    return [int(round(SPACING[d] / TARGET_SPACING[d] * shape[d])) for d in range(3)]


def resize(x, shape, order):
    """skimage.transform.resize(order, mode='edge', anti_aliasing=False) semantics via scipy's zoom."""
    if list(x.shape) == list(shape):
        return x.astype(np.float32)
    zoom = [n / o for n, o in zip(shape, x.shape)]
    y = ndi.zoom(x.astype(np.float64), zoom, order=order, mode="nearest", grid_mode=True)
    return np.clip(y, x.min(), x.max()).astype(np.float32)


def preprocess(img):
    sl, mask = crop_to_nonzero(img)
    x = zscore_in_mask(img[sl], mask)
    return resize(x, new_shape(x.shape), 3), sl


def resample_labels(lab, shape):
    out = np.zeros(shape, np.uint8)
    for v in range(1, NUM_CLASSES):
        out[resize((lab == v).astype(np.float32), shape, 1) >= 0.5] = v
    return out


# ----------------------------------------------------------------------------------------------- network
class ConvDropoutNormReLU(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=[(k - 1) // 2 for k in kernel], bias=True)
        self.norm = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True)
        self.all_modules = nn.Sequential(self.conv, self.norm, self.nonlin)

    def forward(self, x):
        return self.all_modules(x)


class StackedConvBlocks(nn.Module):
    def __init__(self, n, cin, cout, kernel, first_stride):
        super().__init__()
        self.convs = nn.Sequential(ConvDropoutNormReLU(cin, cout, kernel, first_stride),
                                   *[ConvDropoutNormReLU(cout, cout, kernel, 1) for _ in range(n - 1)])

    def forward(self, x):
        return self.convs(x)


class Encoder(nn.Module):
    def __init__(self, cin):
        super().__init__()
        stages = []
        for f, k, s in zip(FEATURES, KERNELS, STRIDES):
            stages.append(nn.Sequential(StackedConvBlocks(2, cin, f, k, s)))
            cin = f
        self.stages = nn.Sequential(*stages)

    def forward(self, x):
        skips = []
        for s in self.stages:
            x = s(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder  # registered like nnU-Net does (its keys appear under decoder.encoder.*)
        n = len(FEATURES)
        self.stages = nn.ModuleList()
        self.transpconvs = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for s in range(1, n):
            below, skip = FEATURES[-s], FEATURES[-(s + 1)]
            self.transpconvs.append(nn.ConvTranspose3d(below, skip, STRIDES[-s], STRIDES[-s], bias=True))
            self.stages.append(StackedConvBlocks(2, 2 * skip, skip, KERNELS[-(s + 1)], 1))
            self.seg_layers.append(nn.Conv3d(skip, NUM_CLASSES, 1, 1, 0, bias=True))

    def forward(self, skips):
        x = skips[-1]
        for s in range(len(self.stages)):
            x = self.transpconvs[s](x)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = self.stages[s](x)
        return self.seg_layers[-1](x)  # deep supervision off: full resolution only


class PlainConvUNet(nn.Module):
    def __init__(self, cin=1):
        super().__init__()
        self.encoder = Encoder(cin)
        self.decoder = Decoder(self.encoder)

    def forward(self, x):
        return self.decoder(self.encoder(x))


# ----------------------------------------------------------------------------------------------- training
def pad_to_patch(x, lab):
    pads = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for p, n in zip(PATCH, x.shape)]
    return np.pad(x, pads), np.pad(lab, pads)


def sample_batch(rng, data, batch):
    xs, ys = [], []
    for b in range(batch):
        x, lab = data[rng.integers(len(data))]
        if b % 3 == 2:  # foreground oversampling (1/3 of the batch), like nnU-Net
            cls = rng.integers(1, NUM_CLASSES)
            where = np.argwhere(lab == cls)
            if len(where) == 0:
                where = np.argwhere(lab > 0)
            c = where[rng.integers(len(where))]
            start = [int(np.clip(c[d] - PATCH[d] // 2, 0, x.shape[d] - PATCH[d])) for d in range(3)]
        else:
            start = [int(rng.integers(0, x.shape[d] - PATCH[d] + 1)) for d in range(3)]
        sl = tuple(slice(s, s + p) for s, p in zip(start, PATCH))
        px, py = x[sl], lab[sl]
        for d in range(3):
            if rng.random() < 0.5:
                px, py = np.flip(px, d), np.flip(py, d)
        xs.append(px.copy())
        ys.append(py.copy())
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys).astype(np.int64))


def loss_fn(logits, y):
    ce = F.cross_entropy(logits, y)
    p = torch.softmax(logits, 1)
    oh = F.one_hot(y, NUM_CLASSES).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)  # batch dice over the foreground classes
    inter = (p * oh).sum(dims)[1:]
    den = (p + oh).sum(dims)[1:]
    dice = (2 * inter + 1e-5) / (den + 1e-5)
    return ce + (1 - dice.mean())


# ----------------------------------------------------------------------------------------------- inference
def gaussian_map():
    g = np.ones(PATCH)
    for d, n in enumerate(PATCH):
        sh = [1, 1, 1]
        sh[d] = n
        g = g * np.exp(-0.5 * (np.arange(n) - n // 2) ** 2 / (n / 8) ** 2).reshape(sh)
    g = g / g.max() * 10
    return np.maximum(g, g[g > 0].min()).astype(np.float32)


def steps(size, tile, step=0.5):
    if size <= tile:
        return [0]
    n = int(np.ceil((size - tile) / (tile * step))) + 1
    return [int(np.round((size - tile) / (n - 1) * i)) for i in range(n)]


@torch.no_grad()
def sliding_window(net, x):
    pads = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for p, n in zip(PATCH, x.shape)]
    xp = np.pad(x, pads)
    g = gaussian_map()
    acc = np.zeros((NUM_CLASSES,) + xp.shape, np.float32)
    wsum = np.zeros(xp.shape, np.float32)
    axes_sets = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    for s0 in steps(xp.shape[0], PATCH[0]):
        for s1 in steps(xp.shape[1], PATCH[1]):
            for s2 in steps(xp.shape[2], PATCH[2]):
                sl = (slice(s0, s0 + PATCH[0]), slice(s1, s1 + PATCH[1]), slice(s2, s2 + PATCH[2]))
                t = torch.from_numpy(np.ascontiguousarray(xp[sl]))[None, None]
                batch = torch.cat([torch.flip(t, a) if a else t for a in axes_sets])
                out = net(batch)
                pred = sum(torch.flip(out[i:i + 1], a) if a else out[i:i + 1] for i, a in enumerate(axes_sets))
                acc[(slice(None),) + sl] += (pred[0] / len(axes_sets)).numpy() * g
                wsum[sl] += g
    logits = acc / wsum
    un = tuple(slice(a, n - b) for (a, b), n in zip(pads, xp.shape))
    return logits[(slice(None),) + un]


def predict_case(net, img):
    x, sl = preprocess(img)
    logits = sliding_window(net, x)
    crop_shape = [s.stop - s.start for s in sl]
    logits = np.stack([resize(c, crop_shape, 1) for c in logits])
    seg = np.zeros(img.shape, np.uint8)
    seg[sl] = logits.argmax(0)
    return seg


def largest_component(seg, label):
    cc, n = ndi.label(seg == label, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = np.bincount(cc.ravel())[1:]
        keep = np.flatnonzero(sizes == sizes.max()) + 1
        seg = seg.copy()
        seg[(cc > 0) & ~np.isin(cc, keep)] = 0
    return seg


def dice(a, b, v):
    a, b = a == v, b == v
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


# ----------------------------------------------------------------------------------------------- export
def plans_json(intensity_props):
    cfg = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(PATCH),
        "median_image_size_in_voxels": [48.0, 58.0, 58.0],
        "spacing": TARGET_SPACING,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [True],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": len(FEATURES),
                "features_per_stage": FEATURES,
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": KERNELS,
                "strides": STRIDES,
                "n_conv_per_stage": [2] * len(FEATURES),
                "n_conv_per_stage_decoder": [2] * (len(FEATURES) - 1),
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(SPACING),
        "original_median_shape_after_transp": list(SHAPE_IJK[::-1]),
        "image_reader_writer": "NibabelIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": cfg},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensity_props},
    }


def dataset_json():
    return {
        "channel_names": {"0": "MRI"},
        "labels": LABELS,
        "numTraining": N_TRAIN,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "NibabelIO",
        "name": DATASET,
        "description": "synthetic demo dataset for kiln segment (bright and dark ellipsoids in an MR-like body)",
    }


def write_postprocessing(folder):
    """(pp_fns, pp_fn_kwargs) as nnU-Net pickles it; the function is referenced by module and name, so a
    stand-in module lets us pickle the same reference without nnunetv2 installed."""
    modname = "nnunetv2.postprocessing.remove_connected_components"
    fname = "remove_all_but_largest_component_from_segmentation"
    stub = types.ModuleType(modname)

    def fn(*a, **k):
        raise RuntimeError("stand-in")
    fn.__module__, fn.__qualname__, fn.__name__ = modname, fname, fname
    setattr(stub, fname, fn)
    saved = {m: sys.modules.get(m) for m in ("nnunetv2", "nnunetv2.postprocessing", modname)}
    sys.modules.update({"nnunetv2": types.ModuleType("nnunetv2"),
                        "nnunetv2.postprocessing": types.ModuleType("nnunetv2.postprocessing"), modname: stub})
    try:
        with open(os.path.join(folder, "postprocessing.pkl"), "wb") as f:
            pickle.dump(([fn], [{"labels_or_regions": 1}]), f, protocol=4)
    finally:
        for m, v in saved.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v
    with open(os.path.join(folder, "postprocessing.json"), "w") as f:
        json.dump({"note": "keep the largest connected component of label 1 (each case has one bright object)",
                   "postprocessing_fns": [fname], "postprocessing_kwargs": [{"labels_or_regions": 1}]}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "seg"))
    ap.add_argument("--iters", type=int, default=250)
    ap.add_argument("--extra-eval", type=int, default=4, help="further held-out cases (not written) for the Dice")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    t0 = time.time()
    raw = [make_case(rng) for _ in range(N_TRAIN + 1)]
    test_img, test_lab = raw.pop()
    data, fg_values = [], []
    for img, lab in raw:
        sl, mask = crop_to_nonzero(img)
        fg_values.append(img[sl][lab[sl] > 0].astype(np.float64))
        x, _ = preprocess(img)
        data.append(pad_to_patch(x, resample_labels(lab[sl], x.shape)))
    print(f"data: {N_TRAIN} training volumes {raw[0][0].shape} (reader order) -> preprocessed "
          f"{data[0][0].shape}.. in {time.time() - t0:.1f} s")

    net = PlainConvUNet(1)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / args.iters) ** 0.9)
    t0 = time.time()
    net.train()
    for it in range(args.iters):
        x, y = sample_batch(rng, data, args.batch)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 25 == 0 or it == args.iters - 1:
            print(f"  iter {it:4d}  loss {loss.item():.4f}  {time.time() - t0:6.1f} s", flush=True)
    train_s = time.time() - t0
    print(f"training: {args.iters} iterations of batch {args.batch} x {PATCH} on {args.threads} threads in {train_s:.1f} s")
    net.eval()

    pred = predict_case(net, test_img)
    pp = largest_component(pred, 1)
    d = [dice(pred, test_lab, v) for v in (1, 2)]
    dpp = [dice(pp, test_lab, v) for v in (1, 2)]
    print(f"held-out Dice of demo_001 (own sliding window, step 0.5, mirroring): label 1 {d[0]:.4f}, label 2 {d[1]:.4f}; "
          f"after keep-largest(1): {dpp[0]:.4f}, {dpp[1]:.4f}")
    if args.extra_eval:
        erng = np.random.default_rng(SEED + 1)
        ds = []
        for _ in range(args.extra_eval):
            img, lab = make_case(erng)
            p = predict_case(net, img)
            ds.append([dice(p, lab, v) for v in (1, 2)])
        ds = np.array(ds)
        print(f"held-out Dice over {args.extra_eval} further cases: label 1 mean {ds[:, 0].mean():.4f} (min {ds[:, 0].min():.4f}), "
              f"label 2 mean {ds[:, 1].mean():.4f} (min {ds[:, 1].min():.4f})")

    # ---- write the nnU-Net folder
    out = os.path.abspath(args.out)
    folder = os.path.join(out, DATASET, TRAINER_FOLDER)
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    os.makedirs(os.path.join(folder, "crossval_results_folds_0"), exist_ok=True)
    fg = np.concatenate(fg_values)
    props = {"max": float(fg.max()), "mean": float(fg.mean()), "median": float(np.median(fg)), "min": float(fg.min()),
             "percentile_00_5": float(np.percentile(fg, 0.5)), "percentile_99_5": float(np.percentile(fg, 99.5)),
             "std": float(fg.std())}
    plans = plans_json(props)
    with open(os.path.join(folder, "plans.json"), "w") as f:
        json.dump(plans, f, indent=4)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json(), f, indent=4)
    write_postprocessing(os.path.join(folder, "crossval_results_folds_0"))
    ckpt = {
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": args.iters,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json(),
                      "device": "cpu"},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(ckpt, os.path.join(folder, "fold_0", "checkpoint_final.pth"))
    dummy = torch.zeros((1, 1) + PATCH)
    dyn = {0: "batch", 2: "x", 3: "y", 4: "z"}
    torch.onnx.export(net, dummy, os.path.join(folder, "fold_0", "model.onnx"), opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": dyn, "logits": dyn},
                      do_constant_folding=True)
    os.makedirs(os.path.join(out, "case"), exist_ok=True)
    os.makedirs(os.path.join(out, "ground_truth"), exist_ok=True)
    save_nifti(os.path.join(out, "case", "demo_001_0000.nii.gz"), test_img, np.int16)
    save_nifti(os.path.join(out, "ground_truth", "demo_001.nii.gz"), test_lab, np.uint8)

    total = 0
    for root, _, files in os.walk(out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"wrote {folder} and one case; {total / 1024:.0f} KiB in {out}")


if __name__ == "__main__":
    main()
