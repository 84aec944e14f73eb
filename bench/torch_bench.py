#!/usr/bin/python3
"""Benchmark the PyTorch (eager, CPU) version of an exported zoo model, mirroring
the `kiln bench` CLI:

  /usr/bin/python3 bench/torch_bench.py build/zoo/NAME/model.onnx [--shape input=1x3x224x224]
      [--threads N] [--runs N] [--warmup N] [--json]

The ONNX file is only used to locate its export folder: the model is rebuilt with
python/export_zoo.py's constructors (seed 0) and the BatchNorm statistics saved by
that export, so it computes the same function as model.onnx.
load_ms is the time to construct the module and load those statistics (no file
parsing, so it is not comparable with the ONNX engines' load times).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import export_zoo  # noqa: E402


def parse_shape(spec):
    name, _, dims = spec.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split("x"))
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"bad --shape {spec!r}, expected name=AxBxC")
    return name, shape


def main():
    ap = argparse.ArgumentParser(description="Benchmark a zoo model with PyTorch.")
    ap.add_argument("model", help="build/zoo/NAME/model.onnx (or the folder)")
    ap.add_argument("--shape", type=parse_shape, help="input shape, e.g. input=1x3x224x224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    folder = args.model if os.path.isdir(args.model) else os.path.dirname(args.model)
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    shape = tuple(meta["input_shape"])
    if args.shape:
        if args.shape[0] != meta["input_name"]:
            ap.error(f"model has no input named {args.shape[0]!r}")
        shape = args.shape[1]

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    start = time.perf_counter()
    model = export_zoo.build_model(meta["name"], os.path.join(folder, "bn_stats.pt"))
    load_ms = (time.perf_counter() - start) * 1e3

    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    times = []
    with torch.no_grad():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)

    result = {
        "engine": f"pytorch {torch.__version__}",
        "model": args.model,
        "shapes": {meta["input_name"]: "x".join(map(str, shape))},
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": min(times),
        "mean_ms": float(np.mean(times)),
        "load_ms": load_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, "
              f"load {load_ms:.1f} ms, peak RSS {result['peak_rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
