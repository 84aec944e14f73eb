#!/usr/bin/python3
"""Reference data for tests/unit/seg_io_test.cpp (NIfTI I/O, connected components).

Run with Debian's /usr/bin/python3 (numpy, nibabel, skimage):
    /usr/bin/python3 python/make_seg_io_refs.py [--shared /work/shared]

Writes under tests/data/seg/:
  io_refs.json          what nibabel reports for each file (shape, spacing, affine, voxel sums and samples)
  io_small_*.nii[.gz]   small hand-crafted NIfTI files covering byte orders, datatypes, scaling, NIfTI-2,
                        qform-only / no-transform geometry, vox_offset with an extension, 4-D with one volume
  io_written_*.nii[.gz] files written by nibabel the way nnU-Net's NibabelIO.write_seg does
                        (Nifti1Image(seg.transpose(2,1,0), affine) + nibabel.save), to compare our writer with
  io_cc_mask.npy, io_cc_labels.npy   a random binary volume and skimage.measure.label(connectivity=3) of it
  io_ckpt_nomirror.pth  torch.save of a checkpoint-like dict without inference_allowed_mirroring_axes
  io_ckpt_deflated.pth  torch.save of assorted plain values, re-zipped with deflate under another archive name
The nibabel *reader* is the reference for every value: files are crafted byte by byte here, then loaded
with nibabel to record what it makes of them.
"""
import argparse
import gzip
import json
import os
import struct

import nibabel as nib
import numpy as np
import skimage.measure

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'tests', 'data', 'seg')


def describe(path, samples_rng=None, n_samples=12):
    """What nnU-Net's NibabelIO would get: array [k, j, i] float64, spacing reversed zooms, affine."""
    img = nib.load(path)
    data = img.get_fdata()  # (i, j, k) float64, scaling applied
    if data.ndim == 4 and data.shape[3] == 1:  # a 4-D file holding one volume (NibabelIO itself refuses 4-D)
        data = data[..., 0]
    arr = data.transpose(2, 1, 0)
    hdr = img.header
    rng = samples_rng or np.random.default_rng(0)
    samples = []
    for _ in range(n_samples):
        idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
        samples.append([*idx, float(arr[idx])])
    return {
        'shape_kji': list(arr.shape),
        'spacing': [float(z) for z in hdr.get_zooms()[:3][::-1]],
        'affine': [float(v) for v in np.asarray(img.affine, dtype=np.float64).ravel()],
        'datatype': int(hdr['datatype']),
        'sum': float(arr.astype(np.float32).astype(np.float64).sum()),
        'min': float(arr.min()),
        'max': float(arr.max()),
        'samples': samples,
    }


def craft_nifti1(path, arr_ijk, dtype, endian='<', slope=None, inter=None, qform=None, sform=None,
                 pixdim=(1.0, 1.0, 1.0), qfac=1.0, ndim=3, extension=b'', gz=False):
    """Builds a NIfTI-1 single file with nibabel's header class, then raw data in the given byte order."""
    hdr = nib.Nifti1Header(endianness=endian)
    shape = list(arr_ijk.shape) + ([1] * (ndim - 3))
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr['pixdim'][1:4] = pixdim
    hdr['pixdim'][0] = qfac
    hdr['qform_code'] = 0
    hdr['sform_code'] = 0
    if qform is not None:
        code, b, c, d, ox, oy, oz = qform
        hdr['qform_code'] = code
        hdr['quatern_b'], hdr['quatern_c'], hdr['quatern_d'] = b, c, d
        hdr['qoffset_x'], hdr['qoffset_y'], hdr['qoffset_z'] = ox, oy, oz
    if sform is not None:
        code, rows = sform
        hdr['sform_code'] = code
        hdr['srow_x'], hdr['srow_y'], hdr['srow_z'] = rows[0], rows[1], rows[2]
    hdr['scl_slope'] = np.nan if slope is None else slope
    hdr['scl_inter'] = np.nan if inter is None else inter
    ext = b''
    if extension:
        esize = 8 + len(extension)
        esize += (-esize) % 16
        body = extension + b'\0' * (esize - 8 - len(extension))
        ext = struct.pack(endian + 'ii', esize, 0) + body
    hdr['vox_offset'] = 352 + len(ext)
    blob = hdr.binaryblock + (b'\x01\0\0\0' if ext else b'\0\0\0\0') + ext
    data = np.asarray(arr_ijk, dtype=np.dtype(dtype).newbyteorder(endian)).tobytes(order='F')
    raw = blob + data
    with (gzip.GzipFile(path, 'wb', mtime=0) if gz else open(path, 'wb')) as f:
        f.write(raw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default='/work/shared')
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    refs = {'files': {}}
    rng = np.random.default_rng(1234)

    # 1. The reference case's inputs and outputs (read from the shared folder, not copied).
    case = os.path.join(args.shared, 'nnunet-case0')
    for rel in ['input/case_B_0000.nii.gz', 'input/case_B_0001.nii.gz', 'input/case_C_0000.nii.gz',
                'input/case_C_0001.nii.gz', 'expected/case_B.nii.gz']:
        refs['files']['shared:' + rel] = describe(os.path.join(case, rel), np.random.default_rng(7))

    # 2. Hand-crafted small files.
    shp = (5, 6, 7)  # (i, j, k)
    small = {}
    a_i16 = rng.integers(-300, 300, size=shp).astype(np.int16)
    craft_nifti1(os.path.join(OUT, 'io_small_be_i16_scaled.nii'), a_i16, np.int16, endian='>', slope=0.5,
                 inter=-3.25, sform=(1, [[0.0, 0.0, 2.5, 10.0], [0.0, -1.5, 0.0, 20.0], [1.25, 0.0, 0.0, -5.0]]),
                 pixdim=(1.25, 1.5, 2.5))
    small['io_small_be_i16_scaled.nii'] = None
    # qform only, oblique rotation, qfac -1, little endian uint16, gzip
    q = np.array([0.9, 0.1, -0.3, 0.2])
    q /= np.linalg.norm(q)
    a_u16 = rng.integers(0, 60000, size=shp).astype(np.uint16)
    craft_nifti1(os.path.join(OUT, 'io_small_qform_u16.nii.gz'), a_u16, np.uint16, qform=(1, q[1], q[2], q[3], 3.5, -7.25, 11.0),
                 pixdim=(0.7, 0.8, 1.9), qfac=-1.0, gz=True)
    small['io_small_qform_u16.nii.gz'] = None
    # no transform at all (base affine), negative pixdim (nibabel takes abs), float64, 4-D with one volume
    a_f64 = rng.normal(size=shp) * 1e3
    craft_nifti1(os.path.join(OUT, 'io_small_base_f64_4d.nii'), a_f64, np.float64, pixdim=(-2.0, 0.5, 3.0), ndim=4)
    small['io_small_base_f64_4d.nii'] = None
    # extension (vox_offset > 352), int8 / uint8 / int32 / uint32 / int64 / float32 with slope
    for name, dt, lo, hi in [('i8', np.int8, -128, 128), ('u8', np.uint8, 0, 256), ('i32', np.int32, -2**31, 2**31),
                             ('u32', np.uint32, 0, 2**32), ('i64', np.int64, -2**40, 2**40)]:
        arr = rng.integers(lo, hi, size=shp, dtype=np.int64).astype(dt)
        fn = f'io_small_ext_{name}.nii'
        craft_nifti1(os.path.join(OUT, fn), arr, dt, extension=b'kiln test extension ' + name.encode(),
                     sform=(2, [[-1.0, 0.0, 0.0, 1.0], [0.0, -1.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]]))
        small[fn] = None
    a_f32 = rng.normal(size=shp).astype(np.float32)
    craft_nifti1(os.path.join(OUT, 'io_small_f32_slope.nii.gz'), a_f32, np.float32, slope=2.0, inter=0.125,
                 sform=(4, [[0.9, 0.1, 0.0, 1.0], [-0.1, 0.9, 0.0, 2.0], [0.0, 0.0, 3.0, 3.0]]), gz=True)
    small['io_small_f32_slope.nii.gz'] = None
    # NIfTI-2, big endian, float32, written by nibabel itself
    a2 = rng.normal(size=shp).astype(np.float32)
    aff2 = np.array([[0.0, -1.1, 0.0, 4.0], [1.2, 0.0, 0.0, -4.0], [0.0, 0.0, 1.3, 0.5], [0, 0, 0, 1]])
    img2 = nib.Nifti2Image(a2, aff2, nib.Nifti2Header(endianness='>'))
    nib.save(img2, os.path.join(OUT, 'io_small_nifti2_be.nii'))
    small['io_small_nifti2_be.nii'] = None
    img2 = nib.Nifti2Image(a_i16, aff2)
    nib.save(img2, os.path.join(OUT, 'io_small_nifti2_le.nii.gz'))
    small['io_small_nifti2_le.nii.gz'] = None
    for fn in small:
        refs['files'][fn] = describe(os.path.join(OUT, fn), np.random.default_rng(3), n_samples=20)

    # 3. What nnU-Net's NibabelIO.write_seg produces (fresh Nifti1Image from an array + affine).
    written = {}
    seg = rng.integers(0, 4, size=(4, 5, 6)).astype(np.uint8)  # reader order (k, j, i)
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff_a = np.eye(4)
    aff_a[:3, :3] = rot @ np.diag([0.8, 0.9, -2.5])  # det < 0 -> qfac -1
    aff_a[:3, 3] = [12.5, -30.25, 7.0]
    aff_b = np.array([[-0.8999999761581421, 0, 0, 80.0], [0, -0.8999999761581421, 0, -95.0], [0, 0, 2.0, -120.0],
                      [0, 0, 0, 1]])
    for fn, arr, aff in [('io_written_u8.nii.gz', seg, aff_a), ('io_written_u16.nii', (seg.astype(np.uint16) * 300), aff_b),
                         ('io_written_f32.nii.gz', rng.normal(size=(4, 5, 6)).astype(np.float32), aff_a)]:
        nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), aff), os.path.join(OUT, fn))
        written[fn] = {'affine_in': [float(v) for v in aff.ravel()]}
        written[fn].update(describe(os.path.join(OUT, fn), np.random.default_rng(5), n_samples=5))
    refs['written'] = written

    # 4. Connected components with full connectivity (nnU-Net's postprocessing uses skimage.measure.label).
    mask = (rng.random((14, 17, 19)) < 0.22).astype(np.uint8)
    mask[3:6, 4:9, 2:5] = 1
    labels = skimage.measure.label(mask, connectivity=3).astype(np.int32)
    np.save(os.path.join(OUT, 'io_cc_mask.npy'), mask)
    np.save(os.path.join(OUT, 'io_cc_labels.npy'), labels)
    refs['cc'] = {'num_components': int(labels.max())}

    # 5. Small torch checkpoints: one without inference_allowed_mirroring_axes (stored zip, as torch writes it),
    #    one with assorted plain values re-zipped with deflate under another archive prefix.
    import torch
    import zipfile
    torch.save({'network_weights': {'w': torch.zeros(3)}, 'trainer_name': 'nnUNetTrainer_noMirroring',
                'init_args': {'configuration': '3d_fullres', 'fold': 0}},
               os.path.join(OUT, 'io_ckpt_nomirror.pth'))
    values = {'init_args': {'configuration': '2d', 'fold': 1}, 'inference_allowed_mirroring_axes': (0, 1),
              'ints': [0, 1, 255, 256, 65535, 65536, -1, -300, -70000, 2**31 - 1, -2**31, 2**40, -2**40, 2**63 - 1, -2**63],
              'big': 2**70, 'float': 0.1, 'neg_float': -2.5e-300, 'text': 'h\u00e9llo', 'long_text': 'x' * 300,
              'bytes': b'\x00\x01\xff', 'none': None, 'flags': (True, False), 'nested': {'a': [(1, 2), [3, [4]]]},
              'tensor': torch.arange(4, dtype=torch.float32)}
    tmp = os.path.join(OUT, 'tmp_ckpt.pth')
    torch.save(values, tmp)
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(os.path.join(OUT, 'io_ckpt_deflated.pth'), 'w',
                                                       compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr('renamed_archive/' + info.filename.split('/', 1)[1], zin.read(info.filename))
    os.remove(tmp)
    loaded = torch.load(os.path.join(OUT, 'io_ckpt_deflated.pth'))
    assert loaded['ints'] == values['ints'] and loaded['big'] == 2**70

    with open(os.path.join(OUT, 'io_refs.json'), 'w') as f:
        json.dump(refs, f, indent=1)
    print('wrote', OUT)


if __name__ == '__main__':
    main()
