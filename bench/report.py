#!/usr/bin/python3
"""Summarise the raw per-process results of bench/run.sh into a Markdown report.

Reads RAW/<model>.b<batch>.<engine>.<round>.{json,stderr,rc} (one JSON object on
stdout) and RAW/peak.json (bench/peak/fma_peak), and reports, per model, batch
size and engine, medians across rounds: latency, throughput, start-up, peak RSS;
the ratios to ORT with their geometric means, the issue's targets with a met /
not met mark, and the roofline fraction of resnet50 and unet3d.
Normally invoked by bench/run.sh, which passes the run's context as options.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess

ENGINES = [("kiln", "kiln"), ("ort", "ORT"), ("torch", "PyTorch")]
KEYS = ["median_ms", "p90_ms", "load_ms", "peak_rss_mb"]  # required in every result
OPTIONAL = ["startup_ms", "boot_ms", "startup_excl_boot_ms", "first_output_ms_since_spawn",
            "first_run_ms", "input_gen_ms"]
# Keys whose medians take in the start-up-only processes too (bench/run.sh --startup-samples).
STARTUP_KEYS = {"startup_ms", "boot_ms", "startup_excl_boot_ms", "first_output_ms_since_spawn"}

# The targets.
BATCH_TARGET = 8
BATCH_TARGET_GEOMEAN = 1.15  # geomean of ORT/kiln latency at batch 8 must be at least this
STARTUP_TARGET = 0.5  # kiln's start-up must be at most this fraction of ORT's, for every model
B1_TARGET_GEOMEAN = 1.15  # geomean of ORT/kiln latency at batch 1 must be at least this...
B1_TARGET_MIN = 0.9       # ...with no model below this...
B1_TARGET_UNET = ("unet3d", 1.4)  # ...and the 3D U-Net at least this
MEMORY_TARGET = 0.8       # kiln's peak RSS at most this fraction of ORT's, for every model
ROOFLINE_MODELS = [("resnet50", None), ("unet3d", 1)]  # (model, batch or None = every batch run)

MET, NOT_MET = "✅ met", "❌ not met"


def read_result(prefix):
    """Return (result dict, None) or (None, error message) for one process run."""
    def read(ext):
        try:
            with open(f"{prefix}.{ext}") as f:
                return f.read()
        except OSError:
            return None

    rc, stdout, stderr = read("rc"), read("json") or "", read("stderr") or ""
    last_err = next((l.strip() for l in reversed(stderr.splitlines()) if l.strip()), "")
    if rc is None:
        return None, "not run"
    if rc.strip() != "0":
        status = "timed out" if rc.strip() == "124" else f"exit status {rc.strip()}"
        return None, f"{status}: {last_err}" if last_err else status
    lines = [l for l in stdout.splitlines() if l.lstrip().startswith("{")]
    try:
        try:  # one object, possibly pretty-printed over several lines
            result = json.loads(stdout)
        except ValueError:
            result = json.loads(lines[-1])
        missing = [k for k in KEYS if not is_num(result.get(k))]
    except (IndexError, ValueError, AttributeError):
        return None, "no JSON object on stdout"
    if missing:
        return None, f"JSON lacks {', '.join(missing)}"
    if is_num(result.get("startup_ms")) and is_num(result.get("boot_ms")):
        result["startup_excl_boot_ms"] = result["startup_ms"] - result["boot_ms"]
    return result, None


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def aggregate(raw, model, batch, engine, rounds, startup_samples=0):
    """Median of each key across the successful rounds (None if none), plus the errors seen.
    The start-up keys take in the start-up-only processes (<model>.b<batch>.<engine>.s<j>) as well, where there
    are any; summary["startup_n"] is how many processes their medians are over."""
    ok, errors = [], []
    for r in range(rounds):
        result, err = read_result(os.path.join(raw, f"{model}.b{batch}.{engine}.{r}"))
        (ok.append(result) if result else errors.append(err))
    if not ok:
        return None, errors
    extra = []
    for j in range(startup_samples):
        path = os.path.join(raw, f"{model}.b{batch}.{engine}.s{j}")
        if os.path.exists(path + ".json"):
            result, _ = read_result(path)
            if result:
                extra.append(result)
    summary = {k: statistics.median(res[k] for res in ok) for k in KEYS}
    for k in OPTIONAL:
        pool = ok + extra if k in STARTUP_KEYS else ok
        values = [res[k] for res in pool if is_num(res.get(k))]
        summary[k] = statistics.median(values) if values else None
    summary["startup_n"] = sum(1 for res in ok + extra if is_num(res.get("startup_ms")))
    for k in ("engine", "runs", "dnnl_isa", "dnnl_version"):
        summary[k] = ok[0].get(k)
    summary["rounds_ok"] = len(ok)
    return summary, errors


def fmt(value, digits=1):
    return "error" if value is None else f"{value:.{digits}f}"


def opt(value, digits=1):
    """Like fmt, for values an engine may not report (older binaries): n/a instead of error."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def cell(summary, key, digits=1):
    """A per-engine value: error if the engine failed, n/a if it did not report the key."""
    return "error" if summary is None else opt(summary.get(key), digits)


def latency_ratio(num, den):
    """num/den of the median latencies, or None when either failed."""
    return num["median_ms"] / den["median_ms"] if num and den else None


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def shell(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def read_peak(path):
    """(peak JSON or None, message explaining why it is missing)."""
    try:
        with open(path) as f:
            peak = json.load(f)
    except OSError:
        return None, "not measured (bench/peak/fma_peak did not run; see build/bench/*/peak.stderr)"
    except ValueError:
        return None, "fma_peak printed no valid JSON"
    return peak, ""


def isa_gflops(peak, isa):
    entry = peak.get(isa) if peak else None
    return entry.get("gflops") if isinstance(entry, dict) and is_num(entry.get("gflops")) else None


def describe_isa(peak, isa):
    entry = peak.get(isa) if peak else None
    if entry is None:
        return f"{isa}: not supported by this CPU"
    if "error" in entry:
        return f"{isa}: {entry['error']}"
    return f"{isa}: {entry['gflops']:.1f} GFLOP/s ({entry['gflops_1_thread']:.1f} with 1 thread)"


def shape_str(meta, batch):
    return "x".join(map(str, [batch] + list(meta["input_shape"][1:])))


def batchable(meta):
    """2D image model whose batch axis can be changed (bench/run.sh runs other batch sizes)."""
    return len(meta["input_shape"]) == 4 and bool(meta.get("dynamic_batch"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", help="folder with the raw results of one bench/run.sh run")
    ap.add_argument("--zoo", default="build/zoo")
    ap.add_argument("--out", default="bench/RESULTS.md")
    ap.add_argument("--models", required=True, help="space-separated model names")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes that were run")
    ap.add_argument("--peak", default=None, help="fma_peak JSON (default: RAW/peak.json)")
    ap.add_argument("--command", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--load-start", default="")
    ap.add_argument("--kiln", default="")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--startup-samples", type=int, default=0)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    args = ap.parse_args()
    batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})

    # rows: (name, meta, {batch: {engine: summary}}, {batch: {engine: errors}}); a batch a model
    # was not run at (not batchable) is absent from its dicts.
    rows = []
    for name in args.models.split():
        meta_path = os.path.join(args.zoo, name, "meta.json")
        if not os.path.exists(meta_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        native = meta["input_shape"][0]
        summaries, errors = {}, {}
        for batch in batches:
            if batch != native and not batchable(meta):
                continue
            summaries[batch], errors[batch] = {}, {}
            for engine, _ in ENGINES:
                summaries[batch][engine], errors[batch][engine] = aggregate(
                    args.raw, name, batch, engine, args.rounds, args.startup_samples)
        rows.append((name, meta, summaries, errors))

    def all_summaries():
        for _, _, s, _ in rows:
            for per_engine in s.values():
                yield per_engine

    versions = {label: next((p[e]["engine"] for p in all_summaries() if p[e] and p[e].get("engine")),
                            "n/a") for e, label in ENGINES}
    kiln_isa = next((p["kiln"]["dnnl_isa"] for p in all_summaries()
                     if p["kiln"] and p["kiln"].get("dnnl_isa")), None)
    kiln_dnnl = next((p["kiln"]["dnnl_version"] for p in all_summaries()
                      if p["kiln"] and p["kiln"].get("dnnl_version")), None)
    git = shell(["git", "rev-parse", "--short", "HEAD"])
    if shell(["git", "status", "--porcelain", "--untracked-files=no"]):
        git += " (uncommitted changes)"
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])

    # The roofline's peak: the ISA the engines' heavy kernels run on. oneDNN reports its own;
    # ORT's MLAS picks its AVX-512F kernels whenever the CPU has avx512f.
    peak, peak_missing = read_peak(args.peak or os.path.join(args.raw, "peak.json"))
    if peak:
        uses_512 = kiln_isa.startswith("avx512") if kiln_isa else bool(peak.get("cpu_avx512f"))
        peak_isa = "avx512" if uses_512 and isa_gflops(peak, "avx512") else "avx2"
        peak_gflops = isa_gflops(peak, peak_isa)
        if peak_gflops is None:
            peak_missing = f"the {peak_isa} measurement failed"
    else:
        peak_isa, peak_gflops = None, None

    # Start-up is taken from the batch-1 processes (the smallest batch run if 1 was not).
    startup_batch = {name: min(s) for name, _, s, _ in rows if s}

    out = [
        "# kiln benchmark results",
        "",
        f"- Date: {args.date}",
        f"- Command: `{args.command}`",
        f"- Machine: {os.cpu_count()} CPUs (nproc {shell(['nproc'])}), {cpu_model()}, "
        f"Linux {platform.release()}",
        f"- Load average (1/5/15 min): {args.load_start} at start, {load_end} at end",
        f"- Git commit: {git or 'unknown'}",
        f"- OMP_WAIT_POLICY: {os.environ.get('OMP_WAIT_POLICY', 'unset')} (libgomp's default "
        "busy-waiting slows OpenMP engines by 10-100x when the CPUs are oversubscribed)",
        f"- Engines: kiln `{args.kiln}`"
        + (f" (oneDNN {kiln_dnnl}, ISA {kiln_isa})" if kiln_isa else "")
        + f"; ORT = {versions['ORT']} (node {shell(['node', '--version'])}); "
        f"{versions['PyTorch']} (eager, no_grad)",
        f"- Settings: {args.threads} threads per engine, {args.rounds} rounds, "
        f"up to {args.runs} timed runs after {args.warmup} warmup runs per process "
        f"(fewer for heavy models); batch sizes {', '.join(map(str, batches))} "
        "(sizes other than 1 for the 2D image models only: input rank 4, dynamic batch axis); "
        f"{args.startup_samples} start-up-only processes per model for kiln and for ORT",
    ]
    if peak:
        out.append(f"- FMA peak (bench/peak/fma_peak.cpp, {peak.get('threads')} threads, best of "
                   f"{peak.get('trials')} trials): {describe_isa(peak, 'avx2')}; "
                   f"{describe_isa(peak, 'avx512')}. Roofline peak: **{peak_isa}"
                   + (f", {peak_gflops:.1f} GFLOP/s**" if peak_gflops else "** (not available)"))
        one = (peak.get(peak_isa) or {}).get("gflops_1_thread")
        threads = peak.get("threads") or 1
        if peak_gflops and is_num(one) and threads > 1 and peak_gflops < 0.9 * threads * one:
            out.append(f"- **Warning**: the {threads}-thread {peak_isa} peak is below 90% of {threads}× "
                       "the 1-thread peak: the CPUs were probably busy while it was measured, which "
                       "overstates the roofline fractions below.")
    else:
        out.append(f"- FMA peak: {peak_missing}")
    out += [
        "",
        "Each engine runs in its own process, interleaved round-robin with the others. "
        "Latencies are the median over rounds of each process's median (p90) per-inference "
        "time, for one random float32 input of the shape shown; throughput is batch / median "
        "latency. Load time is session creation for kiln and ORT; for PyTorch it is module "
        "construction (not comparable). Peak RSS is the process's maximum resident set size.",
        "",
        "**Start-up** is process spawn → first output, measured the same way for the three "
        "engines: bench/run.sh stamps the wall clock (CLOCK_REALTIME, ns) into "
        "`KILN_BENCH_SPAWN_NS` right before it spawns the process, and the process reads the "
        "same clock once its first inference has returned its output (everything is included: "
        "program start, loading and optimising the model, the first run with its lazy "
        "initialisation), minus the time it spent generating the random input (a benchmark "
        "artefact, done differently by each harness). It is taken from the "
        "batch-1 processes (median over rounds) and, for kiln and ORT, from "
        f"{args.startup_samples} more start-up-only processes each (1 run, no warm-up, run "
        "alternately after the model's rounds): a small model's start-up moves by ±30% from "
        "one process to the next on this 2-vCPU machine, so its median needs more processes "
        "than latency does (the *n* column counts them). PyTorch's is over its rounds only. "
        "kiln is a native executable; ORT runs in "
        "Node.js and PyTorch in Python, whose interpreters start before the harness's first "
        "line: that part is reported as *boot* (spawn → the harness's first statement). "
        "The start-up target compares kiln's full start-up with ORT's start-up **excluding** "
        "Node's boot (what ORT costs a native program: loading its library, creating the "
        "session, the first run), the stricter of the two comparisons; the ratio to ORT "
        "including Node's boot is shown as well. PyTorch's start-up includes importing torch "
        "and torchvision and building the module in Python (no model file).",
        "",
    ]
    if peak_gflops:
        out += [
            f"**Roofline fraction** = achieved GFLOP/s (meta.json flops_estimate × batch / median "
            f"latency) / the {peak_isa} FMA peak with the same thread count. The {peak_isa} peak is "
            "used because that is what the engines' heavy kernels execute: "
            + (f"kiln's oneDNN reports ISA `{kiln_isa}`, " if kiln_isa else "")
            + "and ORT's MLAS dispatches its fp32 GEMM/convolution kernels to AVX-512F whenever "
            f"the CPU reports avx512f (this one {'does' if peak.get('cpu_avx512f') else 'does not'}).",
            "",
        ]

    # ---- targets
    b1 = min(batches) if batches else 1
    b1_ratios = [latency_ratio(s[b1]["ort"], s[b1]["kiln"]) for _, _, s, _ in rows if b1 in s]
    target_rows = []
    if BATCH_TARGET in batches:
        pairs = [(name, latency_ratio(s[BATCH_TARGET]["ort"], s[BATCH_TARGET]["kiln"]))
                 for name, _, s, _ in rows if BATCH_TARGET in s]
        gm = geomean(r for _, r in pairs)
        failed = [name for name, r in pairs if r is None]
        detail = (f"geomean {gm:.2f} over {len(pairs) - len(failed)} models" if gm else "no results")
        if failed:
            detail += f"; no ratio (an engine failed) for {', '.join(failed)}"
        met = gm is not None and gm >= BATCH_TARGET_GEOMEAN and not failed
        target_rows.append(f"| batch-{BATCH_TARGET} geomean ORT/kiln latency ≥ "
                           f"{BATCH_TARGET_GEOMEAN:.2f} | {detail} | {MET if met else NOT_MET} |")
    else:
        target_rows.append(f"| batch-{BATCH_TARGET} geomean ORT/kiln latency ≥ "
                           f"{BATCH_TARGET_GEOMEAN:.2f} | batch {BATCH_TARGET} not run "
                           f"(--batches {args.batches}) | {NOT_MET} |")
    startup_ok, startup_bad = [], []
    for name, _, s, _ in rows:
        if not s:
            continue
        k, o = s[startup_batch[name]]["kiln"], s[startup_batch[name]]["ort"]
        r = (k["startup_ms"] / o["startup_excl_boot_ms"]
             if k and o and k.get("startup_ms") and o.get("startup_excl_boot_ms") else None)
        (startup_ok if r is not None and r <= STARTUP_TARGET else startup_bad).append(
            (name, r))
    bad_list = ", ".join(f"{n} ({'n/a' if r is None else f'{r:.2f}'})" for n, r in startup_bad)
    target_rows.append(
        f"| start-up ≤ {STARTUP_TARGET}× ORT's (excluding Node's boot) for every model | "
        f"{len(startup_ok)}/{len(startup_ok) + len(startup_bad)} models"
        + (f"; over the limit or unmeasured: {bad_list}" if startup_bad else "")
        + f" | {MET if rows and not startup_bad else NOT_MET} |")
    gm1 = geomean(b1_ratios)
    named = [(name, latency_ratio(s[b1]["ort"], s[b1]["kiln"])) for name, _, s, _ in rows if b1 in s]
    low = [(n, r) for n, r in named if r is None or r < B1_TARGET_MIN]
    unet = next((r for n, r in named if n == B1_TARGET_UNET[0]), None)
    met1 = (gm1 is not None and gm1 >= B1_TARGET_GEOMEAN and not low and unet is not None
            and unet >= B1_TARGET_UNET[1])
    target_rows.append(
        f"| batch-{b1} latency: geomean ORT/kiln ≥ {B1_TARGET_GEOMEAN:.2f}, no model below "
        f"{B1_TARGET_MIN}, {B1_TARGET_UNET[0]} ≥ {B1_TARGET_UNET[1]} | "
        + (f"geomean {gm1:.2f} over {sum(r is not None for _, r in named)} models" if gm1 else "no results")
        + (f"; below {B1_TARGET_MIN}: " + ", ".join(f"{n} ({'n/a' if r is None else f'{r:.2f}'})" for n, r in low)
           if low else f"; none below {B1_TARGET_MIN}")
        + f"; {B1_TARGET_UNET[0]} {opt(unet, 2)} | {MET if met1 else NOT_MET} |")
    mem = []
    for name, _, s, _ in rows:
        if b1 not in s:
            continue
        k, o = s[b1]["kiln"], s[b1]["ort"]
        mem.append((name, k["peak_rss_mb"] / o["peak_rss_mb"] if k and o and o.get("peak_rss_mb") else None))
    mem_bad = [(n, r) for n, r in mem if r is None or r > MEMORY_TARGET]
    worst = max((r for _, r in mem if r is not None), default=None)
    target_rows.append(
        f"| peak RSS ≤ {MEMORY_TARGET}× ORT's for every model (batch {b1}) | "
        f"{len(mem) - len(mem_bad)}/{len(mem)} models, largest ratio {opt(worst, 2)}"
        + ("; over: " + ", ".join(f"{n} ({'n/a' if r is None else f'{r:.2f}'})" for n, r in mem_bad)
           if mem_bad else "")
        + f" | {MET if mem and not mem_bad else NOT_MET} |")
    ok_incl, measured = 0, 0
    for name, _, s, _ in rows:
        if not s:
            continue
        measured += 1
        k, o = s[startup_batch[name]]["kiln"], s[startup_batch[name]]["ort"]
        if k and o and k.get("startup_ms") and o.get("startup_ms") and k["startup_ms"] <= STARTUP_TARGET * o["startup_ms"]:
            ok_incl += 1
    target_rows.append(
        f"| (for reference) start-up ≤ {STARTUP_TARGET}× ORT's including Node's boot | "
        f"{ok_incl}/{measured} models | |")
    out += ["## Targets", "", "| target | measured | status |", "|---|---|---|"] + target_rows
    out += ["", "Ratios above 1 mean kiln is faster.", ""]

    # ---- batch-1 summary (the original table)
    out += [
        f"## Summary, batch {b1} (median latency, ms)",
        "",
        "| model | input | GFLOPs | kiln | ORT | PyTorch | ORT/kiln | PyTorch/kiln |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, meta, s, _ in rows:
        if b1 not in s:
            continue
        p = s[b1]
        gflops = meta.get("flops_estimate", 0) / 1e9 * b1 / meta["input_shape"][0]
        out.append(
            f"| {name} | {shape_str(meta, b1)} | {gflops:.2f} | "
            + " | ".join(fmt(p[e] and p[e]["median_ms"], 2) for e, _ in ENGINES)
            + f" | {fmt(latency_ratio(p['ort'], p['kiln']), 2)}"
            + f" | {fmt(latency_ratio(p['torch'], p['kiln']), 2)} |")
    gm_torch = geomean(latency_ratio(s[b1]["torch"], s[b1]["kiln"]) for _, _, s, _ in rows if b1 in s)
    out += [f"| **geomean** | | | | | | **{opt(gm1, 2)}** | **{opt(gm_torch, 2)}** |", ""]

    # ---- other batch sizes
    for batch in [b for b in batches if b != b1]:
        out += [
            f"## Batch {batch} (2D image models): latency per batch (ms) and throughput (images/s)",
            "",
            "| model | input | kiln ms | ORT ms | PyTorch ms | kiln img/s | ORT img/s | "
            "PyTorch img/s | ORT/kiln | PyTorch/kiln |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ratios, torch_ratios = [], []
        for name, meta, s, _ in rows:
            if batch not in s:
                if len(meta["input_shape"]) == 4:
                    out.append(f"| {name} | static batch axis in the export: not run |"
                               + " |" * 8)
                continue
            p = s[batch]
            r, rt = latency_ratio(p["ort"], p["kiln"]), latency_ratio(p["torch"], p["kiln"])
            ratios.append(r)
            torch_ratios.append(rt)
            out.append(
                f"| {name} | {shape_str(meta, batch)} | "
                + " | ".join(fmt(p[e] and p[e]["median_ms"], 2) for e, _ in ENGINES) + " | "
                + " | ".join(fmt(p[e] and batch * 1000.0 / p[e]["median_ms"], 1) for e, _ in ENGINES)
                + f" | {fmt(r, 2)} | {fmt(rt, 2)} |")
        out += [f"| **geomean** | | | | | | | | **{opt(geomean(ratios), 2)}** | "
                f"**{opt(geomean(torch_ratios), 2)}** |", ""]

    # ---- start-up
    out += [
        "## Start-up (process spawn → first output, ms)",
        "",
        "| model | kiln | kiln load + first run | ORT | Node boot | ORT excl. boot | PyTorch | "
        "kiln/ORT | kiln/ORT excl. boot | ≤ 0.5× | n (kiln/ORT) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for name, _, s, _ in rows:
        if not s:
            continue
        p = s[startup_batch[name]]
        k, o, t = p["kiln"], p["ort"], p["torch"]
        ks = k and k.get("startup_ms")
        ratio_full = ks / o["startup_ms"] if ks and o and o.get("startup_ms") else None
        ratio_strict = (ks / o["startup_excl_boot_ms"]
                        if ks and o and o.get("startup_excl_boot_ms") else None)
        mark = "n/a" if ratio_strict is None else ("✅" if ratio_strict <= STARTUP_TARGET else "❌")
        kiln_parts = ("error" if k is None else f"{k['load_ms']:.1f} + {k['first_run_ms']:.1f}"
                      if k.get("first_run_ms") is not None else "n/a")
        out.append(
            f"| {name} | {cell(k, 'startup_ms')} | {kiln_parts} | {cell(o, 'startup_ms')} | "
            f"{cell(o, 'boot_ms')} | {cell(o, 'startup_excl_boot_ms')} | {cell(t, 'startup_ms')} | "
            f"{opt(ratio_full, 2) if k and o else 'error'} | "
            f"{opt(ratio_strict, 2) if k and o else 'error'} | {mark} | "
            f"{k['startup_n'] if k else 0}/{o['startup_n'] if o else 0} |")
    out += ["", "`error`: the engine failed; `n/a`: it ran but reported no start-up "
            "(no KILN_BENCH_SPAWN_NS support, e.g. an older kiln binary).", ""]

    # ---- roofline
    out += [f"## Roofline (fraction of the {peak_isa or 'FMA'} peak"
            + (f", {peak_gflops:.1f} GFLOP/s with {peak.get('threads')} threads)"
               if peak_gflops else ")"), ""]
    if not peak_gflops:
        out += [f"No peak: {peak_missing}. Achieved GFLOP/s only.", ""]
    out += ["| model | batch | GFLOP per batch | kiln GFLOP/s | kiln % of peak | ORT GFLOP/s | "
            "ORT % of peak | PyTorch GFLOP/s | PyTorch % of peak |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_name = {name: (meta, s) for name, meta, s, _ in rows}
    for model, only_batch in ROOFLINE_MODELS:
        if model not in by_name:
            out.append(f"| {model} | not in this run |" + " |" * 7)
            continue
        meta, s = by_name[model]
        for batch in sorted(s):
            if only_batch is not None and batch != only_batch:
                continue
            flop = meta.get("flops_estimate", 0) * batch / meta["input_shape"][0]
            cells = []
            for engine, _ in ENGINES:
                summ = s[batch][engine]
                g = flop / (summ["median_ms"] * 1e6) if summ and summ["median_ms"] > 0 else None
                cells.append(fmt(g, 1))
                cells.append("n/a" if g is None or not peak_gflops else f"{100 * g / peak_gflops:.1f}%")
            out.append(f"| {model} | {batch} | {flop / 1e9:.2f} | " + " | ".join(cells) + " |")
    out.append("")

    # ---- per-model tables
    for name, meta, s, errors in rows:
        if not s:
            out += [f"## {name}", "", f"{meta['kind']}, input `{meta['input_name']}` "
                    f"{'x'.join(map(str, meta['input_shape']))}: not run at batch sizes "
                    f"{args.batches} (other batch sizes apply to 2D image models only).", ""]
            continue
        ratios = ", ".join(f"batch {b}: {fmt(latency_ratio(s[b]['ort'], s[b]['kiln']), 2)}"
                           for b in sorted(s))
        runs = ", ".join(
            f"batch {b}: {next((s[b][e]['runs'] for e, _ in ENGINES if s[b][e] and s[b][e].get('runs')), '?')}"
            for b in sorted(s))
        out += [
            f"## {name}",
            "",
            f"{meta['kind']}, input `{meta['input_name']}` "
            f"{'x'.join(map(str, meta['input_shape']))}"
            + ("" if meta.get("dynamic_batch") else " (static batch axis)")
            + f", {meta.get('flops_estimate', 0) / 1e9:.2f} GFLOPs per image; timed runs per "
            f"process: {runs or 'none'}. ORT/kiln: {ratios or 'not run'}",
            "",
            "| engine | batch | median ms | p90 ms | images/s | load ms | start-up ms | "
            "peak RSS MB | rounds ok |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for batch in sorted(s):
            for engine, label in ENGINES:
                summ = s[batch][engine]
                ok = args.rounds - len(errors[batch][engine])
                if summ:
                    cells = [fmt(summ["median_ms"], 2), fmt(summ["p90_ms"], 2),
                             fmt(batch * 1000.0 / summ["median_ms"], 1), fmt(summ["load_ms"], 1),
                             opt(summ.get("startup_ms"), 1), fmt(summ["peak_rss_mb"], 1)]
                else:
                    cells = ["error"] * 6
                out.append(f"| {label} | {batch} | " + " | ".join(cells) + f" | {ok}/{args.rounds} |")
        for batch in sorted(s):
            for engine, label in ENGINES:
                for err in sorted(set(errors[batch][engine])):
                    out.append(f"\n{label} batch {batch} error: `{err}`")
        out.append("")

    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
