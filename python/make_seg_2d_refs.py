#!/usr/bin/python3
"""Reference data for tests/unit/seg_2d_test.cpp: an nnU-Net v2 *2d configuration* end to end.

Writes tests/data/seg/2d/ (small, committed):
  model/plans.json, model/dataset.json       one configuration '2d': patch (16, 24), spacing (1.0, 1.0),
                                              ZScoreNormalization with use_mask_for_norm, default resampling,
                                              reader SimpleITKIO
  model/fold_{0,1}/checkpoint_final.pth      torch.save dict (network_weights, trainer_name, init_args with
                                              configuration '2d', inference_allowed_mirroring_axes (0, 1))
  model/fold_{0,1}/model.onnx                a tiny 2D U-Net-like network (conv, InstanceNorm, LeakyReLU, strided
                                              conv, transposed conv, skip concatenation), opset 17,
                                              input (n, 1, x, y) -> logits (n, 3, x, y), batch and spatial axes dynamic
  cases/aniso_0000.nii.gz                     3D, 41 x 30 x 7 voxels (i, j, k), spacing (0.75, 0.9, 3.0): zero slice
                                              and border (cropped), separate-z in-plane cubic resampling
  cases/iso_0000.nii.gz                       3D, 30 x 12 x 5 voxels, spacing (0.8, 1.1, 1.5): plain 3D cubic
                                              resampling with the slice axis unchanged; axis 1 padded to the patch
  cases/flat_0000.nii.gz                      a 2-D NIfTI (dim[0] = 2), 33 x 20 pixels of 0.6 x 0.8 mm: SimpleITKIO
                                              reads it as one slice with slice spacing 999 x 0.8
  <case>_preprocessed.npy                     float32 (C, Z, X', Y'): the tensor handed to the sliding window
  <case>_logits.npy                           float16 (K, Z, X', Y'): fold-averaged logits before export
  <case>_seg.npy                              uint8 (k, j, i) reader order: the final segmentation
  cases.json                                  per case: spacing, bbox, shapes, tiles, mirroring, folds

The pipeline is emulated from ../shared/segmentation-pipeline.md (sections 2-14; 2d specifics in 1.2, 2.1, 6, 8,
10.1 and 12): reading (SimpleITKIO semantics, incl. the 2-D image rule), crop to non-zero with hole filling,
ZScore in the mask, resampling to [original_spacing[0]] + plans spacing with the separate-z rule (skimage resize +
map_coordinates), zero padding of the two in-plane axes, the 2D slice loop (slice, then axis 1, then axis 2) with
the 2D Gaussian, mirroring over the 2D axes (+2 on the (1, C, p0, p1) network input), fp16 accumulators, fp16 fold
average, linear fp16 resampling back, argmax, un-crop. Own code written from the spec, not nnU-Net's.

Run: /usr/bin/python3 python/make_seg_2d_refs.py
"""
import itertools
import json
import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn as nn
from skimage.transform import resize as sk_resize_raw

from make_seg_infer_refs import steps_for  # nnU-Net's tile steps along one axis (the 3D reference's)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "seg", "2d")
MODEL = os.path.join(OUT, "model")
CASES = os.path.join(OUT, "cases")

PATCH = (16, 24)
PLANS_SPACING = [1.0, 1.0]
NUM_CLASSES = 3
FOLDS = [0, 1]
MIRROR_AXES = (0, 1)
STEP = 0.5

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- network
class Tiny2DUNet(nn.Module):
    """Two resolution levels: conv block, strided conv block, transposed conv, skip concat, conv block, 1x1 conv."""

    def __init__(self, cin=1, f=6, k=NUM_CLASSES):
        super().__init__()

        def block(a, b, stride=1):
            return nn.Sequential(nn.Conv2d(a, b, 3, stride, 1, bias=True), nn.InstanceNorm2d(b, eps=1e-5, affine=True),
                                 nn.LeakyReLU(0.01))

        self.enc0 = block(cin, f)
        self.enc1 = block(f, 2 * f, 2)
        self.up = nn.ConvTranspose2d(2 * f, f, 2, 2, bias=True)
        self.dec0 = block(2 * f, f)
        self.seg = nn.Conv2d(f, k, 1, 1, 0, bias=True)

    def forward(self, x):
        s0 = self.enc0(x)
        y = self.up(self.enc1(s0))
        return self.seg(self.dec0(torch.cat((y, s0), 1)))


def make_net(seed):
    torch.manual_seed(seed)
    net = Tiny2DUNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):  # non-trivial affine parameters
                m.weight.uniform_(0.6, 1.4)
                m.bias.uniform_(-0.3, 0.3)
        net.seg.weight.mul_(6.0)  # logits of a few units: distinct classes over the image
        net.seg.bias.add_(torch.tensor([-0.8, 0.8, 0.4]))  # roughly balanced labels on the test cases
    return net.eval()


# ----------------------------------------------------------------------------------------------- files
def plans_json():
    cfg = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 12,
        "patch_size": list(PATCH),
        "median_image_size_in_voxels": [27.0, 31.0],
        "spacing": PLANS_SPACING,
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
                "n_stages": 2, "features_per_stage": [6, 12], "conv_op": "torch.nn.modules.conv.Conv2d",
                "kernel_sizes": [[3, 3], [3, 3]], "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
                "n_conv_per_stage_decoder": [1], "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }
    return {
        "dataset_name": "Dataset998_Tiny2D",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 0.9, 0.75],
        "original_median_shape_after_transp": [7, 30, 41],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": cfg},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 900.0, "mean": 300.0, "median": 290.0, "min": 1.0, "percentile_00_5": 20.0,
                  "percentile_99_5": 800.0, "std": 120.0}},
    }


def dataset_json():
    return {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
            "file_ending": ".nii.gz", "name": "Dataset998_Tiny2D"}


def write_model(nets):
    if os.path.isdir(MODEL):
        shutil.rmtree(MODEL)
    os.makedirs(MODEL)
    plans, ds = plans_json(), dataset_json()
    with open(os.path.join(MODEL, "plans.json"), "w") as f:
        json.dump(plans, f, indent=1)
    with open(os.path.join(MODEL, "dataset.json"), "w") as f:
        json.dump(ds, f, indent=1)
    for fold, net in zip(FOLDS, nets):
        d = os.path.join(MODEL, "fold_%d" % fold)
        os.makedirs(d)
        ckpt = {
            "network_weights": net.state_dict(),
            "optimizer_state": None,
            "grad_scaler_state": None,
            "logging": {},
            "_best_ema": None,
            "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": "2d", "fold": fold, "dataset_json": ds, "device": "cpu"},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": MIRROR_AXES,
        }
        torch.save(ckpt, os.path.join(d, "checkpoint_final.pth"))
        dyn = {0: "n", 2: "x", 3: "y"}
        torch.onnx.export(net, torch.zeros((1, 1) + PATCH), os.path.join(d, "model.onnx"), opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": dyn, "logits": dyn},
                          do_constant_folding=True)


def make_image(rng, shape_kji, zero_slices=(), border=0):
    """int16 image in reader order (k, j, i): smooth blobs + noise on a positive background, zero outside."""
    nk, nj, ni = shape_kji
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    img = np.full(shape_kji, 250.0)
    for _ in range(4):
        c = rng.uniform([0, 0, 0], [nk, nj, ni])
        r = rng.uniform(2.5, 7.0)
        img += rng.uniform(-200, 350) * np.exp(-(((j - c[1]) ** 2 + (i - c[2]) ** 2) / r ** 2 + (k - c[0]) ** 2 / 9.0))
    img += rng.normal(0, 30, size=shape_kji)
    img = np.clip(np.round(img), 1, 2000)
    if border:
        img[:, :border, :] = 0
        img[:, :, -border:] = 0
    for s in zero_slices:
        img[s] = 0
    return img.astype(np.int16)


def affine_for(zooms_ijk):
    a = np.diag([-zooms_ijk[0], zooms_ijk[1], zooms_ijk[2], 1.0])
    a[:3, 3] = [12.5, -30.25, 7.0]
    return a


def save_3d(path, img_kji, zooms_ijk):
    im = nib.Nifti1Image(np.ascontiguousarray(img_kji.transpose(2, 1, 0)), affine_for(zooms_ijk))
    im.header.set_data_dtype(np.int16)
    nib.save(im, path)


def save_2d(path, img_ji, zooms_ij):
    a = affine_for((zooms_ij[0], zooms_ij[1], 1.0))
    im = nib.Nifti1Image(np.ascontiguousarray(img_ji.T), a)  # 2-D array (i, j): dim[0] = 2
    im.header.set_data_dtype(np.int16)
    nib.save(im, path)
    assert nib.load(path).header["dim"][0] == 2


# ----------------------------------------------------------------------------------------------- pipeline
def read_sitk_like(path):
    """SimpleITKIO.read_images for one channel: (1, k, j, i) float32 and reader-order spacing (section 2.1)."""
    im = nib.load(path)
    arr = np.asarray(im.dataobj)  # int16, no scaling in these files
    zooms = [float(z) for z in im.header.get_zooms()]  # float32 pixdim -> double
    if arr.ndim == 2:
        data = arr.T[None, None]
        sp = [999.0 * max(zooms[1], zooms[0]), zooms[1], zooms[0]]
    else:
        data = arr.transpose(2, 1, 0)[None]
        sp = [abs(z) for z in zooms[::-1]]
    return np.vstack([data]).astype(np.float32), sp


def crop(data):
    mask = ndi.binary_fill_holes(np.any(data != 0, axis=0))
    bbox = []
    for d in range(3):
        idx = np.where(np.any(mask, axis=tuple(a for a in range(3) if a != d)))[0]
        bbox.append([int(idx[0]), int(idx[-1]) + 1] if len(idx) else [0, data.shape[d + 1]])
    sl = tuple(slice(a, b) for a, b in bbox)
    seg = np.where(mask[sl], 0, -1).astype(np.int8)
    return data[(slice(None),) + sl], seg, bbox


def zscore_masked(data, seg):
    data = data.astype(np.float32)
    for c in range(data.shape[0]):
        x = data[c]
        m = seg >= 0
        mean, std = x[m].mean(), x[m].std()
        x[m] = (x[m] - mean) / max(std, 1e-8)
    return data


def sk_resize(x, shape, order):
    return sk_resize_raw(x.astype(np.float64), shape, order=order, mode="edge", anti_aliasing=False)


def lowres_axes(sp):
    s = np.asarray(sp, dtype=np.float64)
    return list(np.where(max(s) / s == 1)[0])


def separate_z(current, new):
    if max(current) / min(current) > 3:
        axes = lowres_axes(current)
    elif max(new) / min(new) > 3:
        axes = lowres_axes(new)
    else:
        return None
    return int(axes[0]) if len(axes) == 1 else None


def resample(data, new_shape, current, new, order, order_z=0):
    """resample_data_or_seg_to_shape (is_seg False), section 6.3; output in the input's dtype."""
    shape = list(data.shape[1:])
    if shape == list(new_shape):
        return data
    axis = separate_z(current, new)
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    src = data.astype(np.float64)
    for c in range(data.shape[0]):
        if axis is None:
            out[c] = sk_resize(src[c], new_shape, order)
            continue
        mid = list(new_shape)
        mid[axis] = shape[axis]
        buf = np.zeros(mid, np.float64)
        in_plane = [n for d, n in enumerate(new_shape) if d != axis]
        for s in range(shape[axis]):
            sl = [slice(None)] * 3
            sl[axis] = s
            buf[tuple(sl)] = sk_resize(src[c][tuple(sl)], in_plane, order)
        if shape[axis] != new_shape[axis]:
            g = np.mgrid[:new_shape[0], :new_shape[1], :new_shape[2]].astype(np.float64)
            coords = np.array([buf.shape[d] / new_shape[d] * (g[d] + 0.5) - 0.5 for d in range(3)])
            out[c] = ndi.map_coordinates(buf, coords, order=order_z, mode="nearest")
        else:
            out[c] = buf
    return out


def gaussian_2d_fp16(tile):
    tmp = np.zeros(tile)
    tmp[tuple(t // 2 for t in tile)] = 1
    g = torch.from_numpy(ndi.gaussian_filter(tmp, [t / 8 for t in tile], 0, mode="constant", cval=0))
    g /= torch.max(g) / 10
    g = g.to(torch.float16)
    g[g == 0] = torch.min(g[g != 0])
    return g


def predict_2d(net, data, mirror_axes):
    """The 2d sliding window of sections 7-10: (K, Z, X, Y) float16 for data (C, Z, X, Y) float32."""
    C, Z, X, Y = data.shape
    px, py = max(X, PATCH[0]), max(Y, PATCH[1])
    lo = ((px - X) // 2, (py - Y) // 2)
    padded = np.zeros((C, Z, px, py), np.float32)  # only the two trailing axes are padded
    padded[:, :, lo[0]:lo[0] + X, lo[1]:lo[1] + Y] = data
    x_all = torch.from_numpy(padded)
    sx, sy = steps_for(px, PATCH[0], STEP), steps_for(py, PATCH[1], STEP)
    g = gaussian_2d_fp16(PATCH)
    acc = torch.zeros((NUM_CLASSES, Z, px, py), dtype=torch.float16)
    nw = torch.zeros((Z, px, py), dtype=torch.float16)
    axes = [a + 2 for a in mirror_axes]
    combos = [c for r in range(len(axes)) for c in itertools.combinations(axes, r + 1)]
    tiles = 0
    with torch.no_grad():
        for z in range(Z):
            for a in sx:
                for b in sy:
                    tile = x_all[:, z, a:a + PATCH[0], b:b + PATCH[1]][None]
                    pred = net(tile)
                    for ax in combos:
                        pred += torch.flip(net(torch.flip(tile, ax)), ax)
                    if combos:
                        pred /= len(combos) + 1
                    p = pred[0]
                    p *= g  # float32 * half -> float32
                    acc[:, z, a:a + PATCH[0], b:b + PATCH[1]] += p  # in float32, stored to half
                    nw[z, a:a + PATCH[0], b:b + PATCH[1]] += g
                    tiles += 1
    out = acc / nw  # half / half
    assert not torch.isinf(out).any()
    return out[:, :, lo[0]:lo[0] + X, lo[1]:lo[1] + Y].numpy(), tiles


def run_case(name, nets, mirroring):
    data, sp = read_sitk_like(os.path.join(CASES, name + "_0000.nii.gz"))
    shape_before = list(data.shape[1:])
    cropped, seg, bbox = crop(data)
    shape_after = list(cropped.shape[1:])
    norm = zscore_masked(cropped, seg)
    target = [sp[0]] + PLANS_SPACING  # 2d: slices keep their spacing
    new_shape = [int(round(sp[d] / target[d] * shape_after[d])) for d in range(3)]
    pre = resample(norm, new_shape, sp, target, 3, 0)
    assert pre.dtype == np.float32 and list(pre.shape[1:]) == new_shape
    logits = None
    tiles = 0
    for net in nets:
        lg, tiles = predict_2d(net, pre, MIRROR_AXES if mirroring else ())
        lg = torch.from_numpy(lg)
        logits = lg if logits is None else logits + lg  # fp16 sum in fold order
    if len(nets) > 1:
        logits = logits / len(nets)  # fp16
    logits = logits.numpy()
    back = resample(logits, shape_after, target, sp, 1, 0)  # fp16 in, fp16 out
    seg_c = back.argmax(0).astype(np.uint8)
    full = np.zeros(shape_before, np.uint8)
    full[tuple(slice(a, b) for a, b in bbox)] = seg_c
    np.save(os.path.join(OUT, name + "_preprocessed.npy"), pre)
    np.save(os.path.join(OUT, name + "_logits.npy"), logits)
    np.save(os.path.join(OUT, name + "_seg.npy"), full)
    # smallest gap between the two largest exported logits (argmax robustness against 1-ulp network noise)
    srt = np.sort(back.astype(np.float32), axis=0)
    gap = float((srt[-1] - srt[-2]).min())
    info = {"spacing": sp, "bbox": bbox, "shape_before_cropping": shape_before, "shape_after_cropping": shape_after,
            "preprocessed_shape": new_shape, "separate_z_axis": separate_z(sp, target),
            "tiles_per_fold": tiles, "mirroring": mirroring, "folds": len(nets),
            "label_counts": [int((full == v).sum()) for v in range(NUM_CLASSES)], "min_top2_gap": gap}
    print(name, json.dumps(info))
    return info


def main():
    rng = np.random.default_rng(2024)
    os.makedirs(OUT, exist_ok=True)
    nets = [make_net(100 + f) for f in FOLDS]
    write_model(nets)
    if os.path.isdir(CASES):
        shutil.rmtree(CASES)
    os.makedirs(CASES)
    save_3d(os.path.join(CASES, "aniso_0000.nii.gz"), make_image(rng, (7, 30, 41), zero_slices=(0,), border=2),
            (0.75, 0.9, 3.0))
    save_3d(os.path.join(CASES, "iso_0000.nii.gz"), make_image(rng, (5, 12, 30)), (0.8, 1.1, 1.5))
    save_2d(os.path.join(CASES, "flat_0000.nii.gz"), make_image(rng, (1, 20, 33))[0], (0.6, 0.8))
    cases = {
        "aniso": run_case("aniso", nets, True),
        "iso": run_case("iso", nets, False),
        "flat": run_case("flat", nets, True),
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    total = sum(os.path.getsize(os.path.join(r, fn)) for r, _, fs in os.walk(OUT) for fn in fs)
    print("wrote %s: %.0f KiB" % (OUT, total / 1024))


if __name__ == "__main__":
    main()
