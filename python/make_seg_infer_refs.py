#!/usr/bin/python3
"""Reference data for tests/unit/seg_infer_test.cpp and tests/unit/seg_export_test.cpp (sliding window, Gaussian
map, fp16 accumulation, export statistics). Written from segmentation-pipeline.md sections 7-14; numpy/scipy/torch
emulations of the documented behaviour, not nnU-Net code.

Run: /usr/bin/python3 python/make_seg_infer_refs.py [--shared /work/shared]
Writes tests/data/seg/inf_* (small files, committed).
"""
import argparse
import itertools
import json
import math
import os

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "seg")


def steps_for(image, tile, step):
    """compute_steps_for_sliding_window for one axis (section 8)."""
    assert image >= tile and 0 < step <= 1
    target = tile * step
    n = int(np.ceil((image - tile) / target)) + 1
    if n > 1:
        actual = (image - tile) / (n - 1)
        return [int(np.round(actual * i)) for i in range(n)]
    return [0]


def gaussian_fp16(tile, sigma_scale=1.0 / 8, value_scaling=10.0):
    """Section 9 with scipy's gaussian_filter and torch's double -> half conversion."""
    tmp = np.zeros(tile)
    tmp[tuple(t // 2 for t in tile)] = 1
    g = gaussian_filter(tmp, [t * sigma_scale for t in tile], 0, mode="constant", cval=0)
    g = torch.from_numpy(g)
    g /= torch.max(g) / value_scaling
    g = g.to(torch.float16)
    g[g == 0] = torch.min(g[g != 0])
    return g.numpy()


def fake_net(x, w, pos):
    """The test's ONNX model: y = x * w + pos, x (N, C, p...), w (1, K, 1, 1, 1), pos (1, K, p...), float32."""
    return (x * w + pos).astype(np.float32)


def sliding_window_emulation(data, patch, step, mirror_axes, use_gaussian, w, pos):
    """Sections 7-10 with fp16 accumulators, written straight from the spec."""
    C = data.shape[0]
    shape = data.shape[1:]
    padded = [max(s, p) for s, p in zip(shape, patch)]
    lo = [(P - s) // 2 for P, s in zip(padded, shape)]
    x = np.zeros((C, *padded), np.float32)
    x[:, lo[0]:lo[0] + shape[0], lo[1]:lo[1] + shape[1], lo[2]:lo[2] + shape[2]] = data
    steps = [steps_for(P, p, step) for P, p in zip(padded, patch)]
    g16 = gaussian_fp16(tuple(patch)) if use_gaussian else np.float16(1)
    K = w.shape[1]
    acc = np.zeros((K, *padded), np.float16)
    wsum = np.zeros(padded, np.float16)
    combos = [c for i in range(len(mirror_axes)) for c in itertools.combinations([a + 2 for a in mirror_axes], i + 1)]
    for s0 in steps[0]:
        for s1 in steps[1]:
            for s2 in steps[2]:
                sl = (slice(s0, s0 + patch[0]), slice(s1, s1 + patch[1]), slice(s2, s2 + patch[2]))
                tile = x[(slice(None),) + sl][None]
                pred = fake_net(tile, w, pos)
                for axes in combos:
                    pred = (pred + np.flip(fake_net(np.flip(tile, axes), w, pos), axes)).astype(np.float32)
                if combos:
                    pred = (pred / np.float32(len(combos) + 1)).astype(np.float32)
                p = pred[0]
                if use_gaussian:
                    p = (p * g16.astype(np.float32)).astype(np.float32)
                a = acc[(slice(None),) + sl]
                acc[(slice(None),) + sl] = (a.astype(np.float32) + p).astype(np.float16)
                wsum[sl] = (wsum[sl].astype(np.float32) + np.asarray(g16).astype(np.float32)).astype(np.float16)
    out = (acc.astype(np.float32) / wsum.astype(np.float32)).astype(np.float16)
    return out[:, lo[0]:lo[0] + shape[0], lo[1]:lo[1] + shape[1], lo[2]:lo[2] + shape[2]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="/work/shared")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(901)

    # --- compute_steps: documented examples + random cases
    cases = [[110, 64, 0.5], [33, 32, 0.5], [64, 64, 0.5], [96, 32, 0.5], [39, 32, 0.5], [94, 64, 0.5],
             [100, 7, 1.0], [51, 20, 0.33], [77, 13, 0.1]]
    for _ in range(60):
        tile = int(rng.integers(1, 130))
        image = tile + int(rng.integers(0, 300))
        step = float(rng.choice([0.5, 0.25, 0.33, 0.7, 1.0, 0.123, float(rng.uniform(0.05, 1.0))]))
        cases.append([image, tile, step])
    with open(os.path.join(OUT, "inf_steps.json"), "w") as f:
        json.dump([{"image": c[0], "tile": c[1], "step": c[2], "starts": steps_for(*c)} for c in cases], f)

    # --- Gaussian maps
    g = gaussian_fp16((32, 64, 64))
    closed = np.ones((32, 64, 64))
    grids = np.meshgrid(*[np.arange(n) for n in (32, 64, 64)], indexing="ij")
    for gr, n in zip(grids, (32, 64, 64)):
        closed = closed * np.exp(-0.5 * (gr - n // 2) ** 2 / (n / 8) ** 2)
    closed16 = (closed * 10).astype(np.float32).astype(np.float16)
    nz = int((closed16 == 0).sum())
    closed16[closed16 == 0] = closed16[closed16 != 0].min()
    print("gaussian (32,64,64): zeros replaced", nz, "closed form bit-identical:",
          np.array_equal(closed16.view(np.uint16), g.view(np.uint16)),
          "peak", g.max(), "at", np.unravel_index(np.argmax(g), g.shape))
    np.save(os.path.join(OUT, "inf_gauss_32_64_64.npy"), g)
    for tile in [(7, 10, 13), (5, 24, 33), (1, 4, 9)]:
        np.save(os.path.join(OUT, "inf_gauss_%d_%d_%d.npy" % tile), gaussian_fp16(tile))

    # --- sliding-window emulation with the fake network
    sw = []
    specs = [
        dict(name="sw1", C=1, K=3, shape=(5, 9, 11), patch=(4, 6, 8), step=0.5, mirror=[0, 1, 2], gauss=True),
        dict(name="sw2", C=2, K=2, shape=(3, 7, 20), patch=(4, 6, 8), step=0.33, mirror=[2, 0], gauss=True),
        dict(name="sw3", C=1, K=3, shape=(8, 12, 16), patch=(4, 6, 8), step=1.0, mirror=[], gauss=False),
        dict(name="sw4", C=1, K=2, shape=(9, 14, 10), patch=(4, 6, 8), step=0.5, mirror=[1], gauss=True),
    ]
    for s in specs:
        data = (rng.standard_normal((s["C"], *s["shape"])) * 4).astype(np.float32)
        wv = np.array([0.5, 2.0, -1.0][:s["K"]], np.float32).reshape(1, s["K"], 1, 1, 1)
        pos = (rng.standard_normal((1, s["K"], *s["patch"])) * 6).astype(np.float32)
        out = sliding_window_emulation(data, s["patch"], s["step"], s["mirror"], s["gauss"], wv, pos)
        np.save(os.path.join(OUT, "inf_%s_data.npy" % s["name"]), data)
        np.save(os.path.join(OUT, "inf_%s_pos.npy" % s["name"]), pos)
        np.save(os.path.join(OUT, "inf_%s_out.npy" % s["name"]), out)
        sw.append(dict(name=s["name"], patch=list(s["patch"]), step=s["step"], mirror=s["mirror"],
                       gaussian=s["gauss"], w=wv.ravel().tolist()))
    # folds: fp16 sum in fold order, fp16 division
    folds = [(rng.standard_normal((2, 3, 4, 5)) * 15).astype(np.float16) for _ in range(3)]
    acc = folds[0].copy()
    for f in folds[1:]:
        acc = (acc.astype(np.float32) + f.astype(np.float32)).astype(np.float16)
    avg = (acc.astype(np.float32) / np.float32(3)).astype(np.float16)
    for i, f in enumerate(folds):
        np.save(os.path.join(OUT, "inf_fold%d.npy" % i), f)
    np.save(os.path.join(OUT, "inf_fold_avg.npy"), avg)
    with open(os.path.join(OUT, "inf_sw_cases.json"), "w") as f:
        json.dump(sw, f, indent=1)

    # --- export: probability statistics of nnU-Net's saved probabilities (the .npz itself is read by the test too)
    case_dir = os.path.join(args.shared, "nnunet-case0", "expected")
    if os.path.isdir(case_dir):
        import nibabel as nib
        stats = {}
        for case in ["case_B", "case_C"]:
            p = np.load(os.path.join(case_dir, case + ".npz"))["probabilities"]
            seg = np.asarray(nib.load(os.path.join(case_dir, case + ".nii.gz")).dataobj)
            seg = seg.transpose(2, 1, 0)  # NibabelIO reader order (k, j, i)
            stats[case] = {
                "shape": list(p.shape),
                "max": [float(p[c].max()) for c in range(p.shape[0])],
                "min": [float(p[c].min()) for c in range(p.shape[0])],
                "sum": [float(p[c].astype(np.float64).sum()) for c in range(p.shape[0])],
                "seg_shape": list(seg.shape),
                "seg_counts": [int((seg == v).sum()) for v in range(int(seg.max()) + 1)],
                "argmax_equals_seg": bool(np.array_equal(p.argmax(0), seg)),
            }
        with open(os.path.join(OUT, "inf_probs_stats.json"), "w") as f:
            json.dump(stats, f, indent=1)
        print(json.dumps(stats))


if __name__ == "__main__":
    main()
