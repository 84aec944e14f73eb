#!/usr/bin/python3
"""Reference data for tests/unit/seg_preprocess_test.cpp (kiln::seg preprocessing and resampling).

Run with Debian's python3 (numpy 1.24, scipy 1.10, skimage 0.19):
    /usr/bin/python3 python/make_seg_preprocess_refs.py
Writes small files tests/data/seg/pre_* (.npy plus pre_cases.json describing them). Deterministic (fixed seeds).

What the references are:
* pre_resize_*: skimage.transform.resize(x.astype(float64), shape, order, mode='edge', anti_aliasing=False)
  on random float32 volumes (the call nnU-Net makes for data without separate z), stored as float64.
* pre_sepz_*, pre_rule_*: nnU-Net's resample_data_or_seg (is_seg=False) re-implemented below from the
  description in segmentation-pipeline.md 6.2/6.3: the separate-z decision, per-slice skimage 2D resizes, then
  scipy.ndimage.map_coordinates(order=order_z, mode='nearest') across slices; written in the input dtype.
* pre_crop_*: scipy.ndimage.binary_fill_holes of the any-channel non-zero mask, and its half-open bbox.
* pre_norm_*: the nnU-Net normalisation schemes written with numpy float32 arithmetic (x.mean(), x.std()).
"""
import json
import os

import numpy as np
import scipy
import scipy.ndimage as ndi
import skimage
from skimage.transform import resize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'seg')
rng = np.random.default_rng(20240917)
cases = {'resize': [], 'sepz': [], 'crop': [], 'norm': []}


def save(name, arr):
    np.save(os.path.join(OUT, name + '.npy'), arr)


def sk_resize(x, shape, order):
    return resize(x.astype(np.float64), shape, order=order, mode='edge', anti_aliasing=False)


def rand_volume(shape, dtype=np.float32):
    # smooth-ish random data with an offset and a scale, so clipping to min/max and overshoot both occur
    x = rng.standard_normal(shape) * rng.uniform(5, 50) + rng.uniform(-100, 100)
    x[tuple(rng.integers(0, s) for s in shape)] += 500.0  # a spike: cubic overshoot gets clipped
    return x.astype(dtype)


# ---------------------------------------------------------------- plain 3D resize (no separate z)
for name, src, dst, order in [
        ('o3_mixed', (7, 11, 5), (9, 6, 8), 3),
        ('o3_up', (5, 6, 7), (10, 12, 9), 3),
        ('o3_down', (12, 10, 9), (5, 4, 6), 3),
        ('o3_sameaxes', (6, 8, 7), (6, 5, 7), 3),
        ('o3_line', (1, 9, 4), (3, 5, 4), 3),
        ('o1_mixed', (7, 11, 5), (9, 6, 8), 1),
        ('o1_down', (12, 10, 9), (5, 4, 6), 1),
        ('o0_mixed', (7, 11, 5), (9, 6, 8), 0),
        ('o0_half', (8, 6, 4), (4, 3, 2), 0)]:
    x = rand_volume(src)
    save('pre_resize_%s_in' % name, x[None])
    save('pre_resize_%s_out' % name, sk_resize(x, dst, order)[None])
    cases['resize'].append({'name': name, 'order': order})


# ---------------------------------------------------------------- nnU-Net's resample_data_or_seg, re-implemented
ANISO = 3


def lowres_axes(spacing):
    s = np.array(spacing, dtype=np.float64)
    return list(np.where(max(s) / s == 1)[0])


def decide(current, new, force=None):
    if force is not None:
        sep = force
        axes = lowres_axes(current) if force else None
    elif max(current) / min(current) > ANISO:
        sep, axes = True, lowres_axes(current)
    elif max(new) / min(new) > ANISO:
        sep, axes = True, lowres_axes(new)
    else:
        sep, axes = False, None
    if axes is not None and len(axes) != 1:
        sep, axes = False, None
    return sep, (int(axes[0]) if axes is not None else -1)


def new_shape_of(shape, old_sp, new_sp):
    return [int(round(o / n * s)) for o, n, s in zip(old_sp, new_sp, shape)]


def nnunet_resample(data, new_shape, current, new, order, order_z):
    shape = np.array(data.shape[1:])
    new_shape = np.array(new_shape)
    if np.all(shape == new_shape):
        return data
    sep, axis = decide(current, new)
    dtype = data.dtype
    data = data.astype(float)
    out = np.zeros((data.shape[0], *new_shape), dtype=dtype)
    if not sep:
        for c in range(data.shape[0]):
            out[c] = sk_resize(data[c], new_shape, order)
        return out
    shape2d = [int(v) for i, v in enumerate(new_shape) if i != axis]
    for c in range(data.shape[0]):
        mid = list(new_shape)
        mid[axis] = shape[axis]
        buf = np.zeros(mid, dtype=np.float64)
        for s in range(shape[axis]):
            sl = [slice(None)] * 3
            sl[axis] = s
            buf[tuple(sl)] = sk_resize(data[c][tuple(sl)], shape2d, order)
        if shape[axis] != new_shape[axis]:
            grids = np.mgrid[:new_shape[0], :new_shape[1], :new_shape[2]].astype(np.float64)
            coords = np.array([float(buf.shape[d]) / new_shape[d] * (grids[d] + 0.5) - 0.5 for d in range(3)])
            out[c] = ndi.map_coordinates(buf, coords, order=order_z, mode='nearest')
        else:
            out[c] = buf
    return out


f32 = lambda v: float(np.float32(v))  # spacings as read from a NIfTI (float32 -> double)
for name, shp, cur, new, order, order_z, dtype in [
        ('axis0_oz0', (2, 5, 12, 10), (3.5, 1.0, 1.0), (1.5, 0.8, 1.25), 3, 0, np.float32),
        ('axis0_oz1', (2, 5, 12, 10), (3.5, 1.0, 1.0), (1.5, 0.8, 1.25), 3, 1, np.float32),
        ('axis2_oz0_f16', (1, 9, 8, 4), (1.0, 1.0, 4.5), (0.9, 1.1, 2.0), 1, 0, np.float16),
        ('axis2_oz1_f16', (1, 9, 8, 4), (1.0, 1.0, 4.5), (0.9, 1.1, 2.0), 1, 1, np.float16),
        ('target_aniso', (1, 6, 7, 16), (1.0, 1.0, 1.0), (1.0, 1.0, 3.2), 3, 0, np.float32),
        ('zonly_oz1', (1, 4, 6, 5), (f32(4.2), 1.0, 1.0), (2.5, 1.0, 1.0), 3, 1, np.float32),
        ('ratio_exactly3', (1, 4, 6, 5), (3.0, 1.0, 1.0), (2.0, 1.0, 1.0), 3, 0, np.float32),
        ('two_tied_axes', (1, 4, 4, 9), (3.5, 3.5, 1.0), (2.0, 2.0, 1.0), 3, 0, np.float32),
        ('plain_f16_o1', (1, 6, 7, 5), (1.0, 1.0, 1.0), (1.5, 0.8, 0.6), 1, 0, np.float16),
        ('caseB_like', (1, 10, 14, 13), (2.0, f32(0.9), f32(0.9)), (3.0, 1.0, 1.0), 3, 0, np.float32)]:
    x = rand_volume(shp, dtype)
    ns = new_shape_of(shp[1:], cur, new)
    sep, axis = decide(cur, new)
    y = nnunet_resample(x, ns, cur, new, order, order_z)
    save('pre_sepz_%s_in' % name, x)
    save('pre_sepz_%s_out' % name, y)
    cases['sepz'].append({'name': name, 'current': list(cur), 'new': list(new), 'order': order,
                          'order_z': order_z, 'new_shape': ns, 'separate_z': bool(sep), 'axis': axis})

# compute_new_shape with float32-derived spacings (the values NIfTI pixdims give)
cases['new_shape'] = []
for shape, old, new in [((58, 105, 107), (2.0, f32(0.9), f32(0.9)), (3.0, 1.0, 1.0)),
                        ((15, 89, 84), (3.0, 1.0, 1.0), (3.0, 1.0, 1.0)),
                        ((101, 77, 45), (f32(0.7), f32(1.3), f32(2.5)), (f32(0.8), 1.0, 1.5)),
                        ((5, 5, 7), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),   # 2.5 -> 2, 3.5 -> 4: half to even
                        ((3, 9, 11), (f32(0.3), f32(0.1), f32(0.7)), (f32(0.2), f32(0.4), f32(0.9)))]:
    cases['new_shape'].append({'shape': list(shape), 'old': list(old), 'new': list(new),
                               'expected': new_shape_of(shape, old, new)})

# ---------------------------------------------------------------- crop to non-zero
def crop_ref(name, x):
    nz = np.any(x != 0, axis=0)
    filled = ndi.binary_fill_holes(nz)
    bbox = []
    for d in range(3):
        other = tuple(i for i in range(3) if i != d)
        idx = np.where(np.any(filled, axis=other))[0]
        bbox.append([int(idx[0]), int(idx[-1]) + 1] if len(idx) else [0, x.shape[d + 1]])
    save('pre_crop_%s_in' % name, x)
    save('pre_crop_%s_filled' % name, filled.astype(np.uint8))
    cases['crop'].append({'name': name, 'bbox': bbox})


x = np.zeros((2, 18, 20, 16), np.float32)
g = np.mgrid[:18, :20, :16]
r = np.sqrt((g[0] - 8) ** 2 + (g[1] - 9) ** 2 + (g[2] - 7) ** 2)
x[0][(r >= 3) & (r < 5)] = rng.uniform(1, 5, size=((r >= 3) & (r < 5)).sum())  # hollow shell: its inside is a hole
x[0][8, 9, 7] = 0.0
x[1][14:16, 2:5, 11:14] = -2.5                                                    # only in channel 1
x[0][2:6, 12:17, 0:4] = 3.0
x[0][3:5, 13:16, 0:3] = 0.0  # a cavity open to the z=0 border: not a hole
crop_ref('shell', x)
blob = ndi.gaussian_filter(rng.standard_normal((24, 22, 20)), 1.5)
x = np.zeros((1, 24, 22, 20), np.float32)
x[0] = np.where(blob > -0.1, blob + 1.0, 0).astype(np.float32)  # mostly foreground: background pockets are holes
x[0, :2] = 0
x[0, :, -3:] = 0
crop_ref('random', x)

# ---------------------------------------------------------------- normalisation (numpy float32, as nnU-Net)
plans_props = {'mean': 16.221753828608666, 'std': 126.09314659024237,
               'percentile_00_5': -150.0, 'percentile_99_5': 217.0}
x = rand_volume((23, 37, 41)) * 4.0   # ~35k voxels: several numpy 8192-element reduction chunks
mask = (ndi.gaussian_filter(rng.standard_normal(x.shape), 2) > -0.02).astype(np.uint8)
save('pre_norm_in', x)
save('pre_norm_mask', mask)

ct = x.copy()
np.clip(ct, plans_props['percentile_00_5'], plans_props['percentile_99_5'], out=ct)
ct -= plans_props['mean']
ct /= max(plans_props['std'], 1e-8)
save('pre_norm_ct_out', ct)

z = x.copy()
mean, std = z.mean(), z.std()
z -= mean
z /= max(std, 1e-8)
save('pre_norm_zscore_out', z)

zm = x.copy()
m = mask.astype(bool)
mean_m, std_m = zm[m].mean(), zm[m].std()
zm[m] = (zm[m] - mean_m) / max(std_m, 1e-8)
save('pre_norm_zscore_masked_out', zm)

r01 = x.copy()
r01 -= r01.min()
r01 /= np.clip(r01.max(), a_min=1e-8, a_max=None)
save('pre_norm_rescale01_out', r01)
cases['norm'] = {'props': plans_props, 'mean': float(mean), 'std': float(std), 'masked_mean': float(mean_m),
                 'masked_std': float(std_m), 'masked_count': int(m.sum())}

cases['versions'] = {'numpy': np.__version__, 'scipy': scipy.__version__, 'skimage': skimage.__version__}
with open(os.path.join(OUT, 'pre_cases.json'), 'w') as f:
    json.dump(cases, f, indent=1)
print('wrote', OUT)
