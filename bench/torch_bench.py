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

Start-up, as in `kiln bench`: when KILN_BENCH_SPAWN_NS holds the CLOCK_REALTIME time (ns since the
epoch) at which the caller spawned this process, the JSON adds boot_ms (spawn -> this script's first
statement: the Python interpreter starting), first_output_ms_since_spawn (spawn -> first inference
output ready: interpreter start, importing torch and torchvision, building the module, input
generation, first run), input_gen_ms and startup_ms = first_output_ms_since_spawn - input_gen_ms.
"""
import time

ENTRY_NS = time.time_ns()  # before the heavy imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

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


def spawn_ns():
    """KILN_BENCH_SPAWN_NS, or None when unset or malformed."""
    value = os.environ.get("KILN_BENCH_SPAWN_NS", "")
    if not value:
        return None
    if not value.isdigit():
        print(f"warning: ignoring KILN_BENCH_SPAWN_NS={value!r} (expected ns since the epoch)",
              file=sys.stderr)
        return None
    return int(value)


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

    start = time.perf_counter()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    input_gen_ms = (time.perf_counter() - start) * 1e3
    times = []
    with torch.no_grad():
        # The first run counts as the first warm-up run (as in `kiln bench`).
        start = time.perf_counter()
        model(x)
        first_run_ms = (time.perf_counter() - start) * 1e3
        first_output_ns = time.time_ns()
        for _ in range(1, args.warmup):
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
        "first_run_ms": first_run_ms,
        "input_gen_ms": input_gen_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB
    }
    spawn = spawn_ns()
    if spawn is not None:
        result["boot_ms"] = (ENTRY_NS - spawn) / 1e6
        result["first_output_ms_since_spawn"] = (first_output_ns - spawn) / 1e6
        result["startup_ms"] = result["first_output_ms_since_spawn"] - input_gen_ms
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, "
              f"load {load_ms:.1f} ms, peak RSS {result['peak_rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
