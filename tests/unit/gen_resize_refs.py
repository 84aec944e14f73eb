#!/usr/bin/python3
"""Generates tests/unit/data/resize_refs.txt: PyTorch F.interpolate reference outputs for kiln's Resize tests.

Run from the repository root with /usr/bin/python3 (torch 1.13). Each case is one block:
  case <name> <onnx mode> <coordinate_transformation_mode> <nearest_mode> <cubic_coeff_a> <by: scales|sizes>
  in <rank> <dims...>
  out <rank> <dims...>
  scales <n> <values...>        (the ONNX scales/sizes input the exporter would emit)
  x <values...>
  y <values...>
The mapping to ONNX attributes is the one torch.onnx uses at opset >= 11:
  nearest                      -> asymmetric + floor
  (bi|tri)linear, bicubic, align_corners=False -> pytorch_half_pixel
  (bi|tri)linear, bicubic, align_corners=True  -> align_corners
  bicubic                      -> cubic_coeff_a = -0.75
"""
import torch
import torch.nn.functional as F

torch.manual_seed(1234)


def fmt(vals):
    return " ".join("%.9g" % float(v) for v in vals)


def case(f, name, x, mode, align, scale=None, size=None):
    kw = {}
    if mode != "nearest":
        kw["align_corners"] = align
    if scale is not None:
        y = F.interpolate(x, scale_factor=scale, mode=mode, **kw)
        by = "scales"
        spec = [1.0, 1.0] + [float(scale)] * (x.dim() - 2)
    else:
        y = F.interpolate(x, size=size, mode=mode, **kw)
        by = "sizes"
        spec = list(x.shape[:2]) + list(size)
    onnx_mode = {"nearest": "nearest", "bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}[mode]
    if mode == "nearest":
        coord, nm = "asymmetric", "floor"
    else:
        coord, nm = ("align_corners" if align else "pytorch_half_pixel"), "round_prefer_floor"
    f.write("case %s %s %s %s %s %s\n" % (name, onnx_mode, coord, nm, "-0.75", by))
    f.write("in %d %s\n" % (x.dim(), " ".join(str(d) for d in x.shape)))
    f.write("out %d %s\n" % (y.dim(), " ".join(str(d) for d in y.shape)))
    f.write("%s %d %s\n" % (by, len(spec), fmt(spec)))
    f.write("x %s\n" % fmt(x.reshape(-1).tolist()))
    f.write("y %s\n" % fmt(y.reshape(-1).tolist()))


def main():
    x2 = torch.rand(1, 2, 3, 4)
    x2b = torch.rand(2, 1, 6, 8)
    x3 = torch.rand(1, 2, 2, 3, 4)
    with open("tests/unit/data/resize_refs.txt", "w") as f:
        case(f, "nearest_x2", x2, "nearest", None, scale=2.0)
        case(f, "nearest_x3", x2, "nearest", None, scale=3.0)
        case(f, "nearest_down_half", x2b, "nearest", None, scale=0.5)
        case(f, "nearest_size_5x7", x2, "nearest", None, size=(5, 7))
        for align in (False, True):
            a = "ac1" if align else "ac0"
            case(f, "bilinear_x2_" + a, x2, "bilinear", align, scale=2.0)
            case(f, "bilinear_down_half_" + a, x2b, "bilinear", align, scale=0.5)
            case(f, "bilinear_size_5x7_" + a, x2, "bilinear", align, size=(5, 7))
            case(f, "bicubic_x2_" + a, x2, "bicubic", align, scale=2.0)
            case(f, "bicubic_size_4x3_" + a, x2b, "bicubic", align, size=(4, 3))
            case(f, "trilinear_x2_" + a, x3, "trilinear", align, scale=2.0)
            case(f, "trilinear_size_3x5x3_" + a, x3, "trilinear", align, size=(3, 5, 3))
        case(f, "nearest3d_x2", x3, "nearest", None, scale=2.0)


if __name__ == "__main__":
    main()
