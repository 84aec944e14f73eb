#!/usr/bin/python3
"""Summarise the raw per-process results of bench/run.sh into a Markdown report.

Reads RAW/<model>.<engine>.<round>.{json,stderr,rc} (one JSON object on the last
'{' line of stdout) and reports, per model and engine, medians across rounds.
Normally invoked by bench/run.sh, which passes the run's context as options.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess

ENGINES = [("kiln", "kiln"), ("ort", "ORT"), ("torch", "PyTorch")]
KEYS = ["median_ms", "p90_ms", "load_ms", "peak_rss_mb"]


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
        missing = [k for k in KEYS if not isinstance(result.get(k), (int, float))]
    except (IndexError, ValueError):
        return None, "no JSON object on stdout"
    if missing:
        return None, f"JSON lacks {', '.join(missing)}"
    return result, None


def aggregate(raw, model, engine, rounds):
    """Median of each key across the successful rounds, plus the errors seen."""
    ok, errors = [], []
    for r in range(rounds):
        result, err = read_result(os.path.join(raw, f"{model}.{engine}.{r}"))
        (ok.append(result) if result else errors.append(err))
    summary = {k: statistics.median(res[k] for res in ok) for k in KEYS} if ok else None
    if ok:
        summary["engine"] = ok[0].get("engine")
        summary["runs"] = ok[0].get("runs")
    return summary, errors


def fmt(value, digits=1):
    return "error" if value is None else f"{value:.{digits}f}"


def ratio(num, den):
    return f"{num['median_ms'] / den['median_ms']:.2f}" if num and den else "error"


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", help="folder with the raw results of one bench/run.sh run")
    ap.add_argument("--zoo", default="build/zoo")
    ap.add_argument("--out", default="bench/RESULTS.md")
    ap.add_argument("--models", required=True, help="space-separated model names")
    ap.add_argument("--command", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--load-start", default="")
    ap.add_argument("--kiln", default="")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    args = ap.parse_args()

    rows = []  # (name, meta, {engine: summary}, {engine: errors})
    for name in args.models.split():
        meta_path = os.path.join(args.zoo, name, "meta.json")
        if not os.path.exists(meta_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        summaries, errors = {}, {}
        for engine, _ in ENGINES:
            summaries[engine], errors[engine] = aggregate(args.raw, name, engine, args.rounds)
        rows.append((name, meta, summaries, errors))

    versions = {label: next((s[e]["engine"] for _, _, s, _ in rows if s[e] and s[e].get("engine")),
                            "n/a") for e, label in ENGINES}
    git = shell(["git", "rev-parse", "--short", "HEAD"])
    if shell(["git", "status", "--porcelain", "--untracked-files=no"]):
        git += " (uncommitted changes)"
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])

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
        f"- Engines: kiln `{args.kiln}`; ORT = {versions['ORT']} "
        f"(node {shell(['node', '--version'])}); {versions['PyTorch']} (eager, no_grad)",
        f"- Settings: {args.threads} threads per engine, {args.rounds} rounds, "
        f"up to {args.runs} timed runs after {args.warmup} warmup runs per process "
        "(fewer for heavy models)",
        "",
        "Each engine runs in its own process, interleaved round-robin with the others. "
        "Latencies are the median over rounds of each process's median (p90) per-inference "
        "time, for one random float32 input of the shape shown. Load time is session "
        "creation for kiln and ORT; for PyTorch it is module construction (not comparable). "
        "Peak RSS is the process's maximum resident set size.",
        "",
        "## Summary (median latency, ms)",
        "",
        "| model | input | GFLOPs | kiln | ORT | PyTorch | ORT/kiln | PyTorch/kiln |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, meta, s, _ in rows:
        gflops = meta.get("flops_estimate", 0) / 1e9
        out.append(
            f"| {name} | {'x'.join(map(str, meta['input_shape']))} | {gflops:.2f} | "
            + " | ".join(fmt(s[e] and s[e]["median_ms"], 2) for e, _ in ENGINES)
            + f" | {ratio(s['ort'], s['kiln'])} | {ratio(s['torch'], s['kiln'])} |")
    out += ["", "Ratios above 1 mean kiln is faster.", ""]

    for name, meta, s, errors in rows:
        runs = next((s[e]["runs"] for e, _ in ENGINES if s[e] and s[e].get("runs")), "?")
        out += [
            f"## {name}",
            "",
            f"{meta['kind']}, input `{meta['input_name']}` "
            f"{'x'.join(map(str, meta['input_shape']))}, "
            f"{meta.get('flops_estimate', 0) / 1e9:.2f} GFLOPs, {runs} timed runs per process. "
            f"ORT/kiln: {ratio(s['ort'], s['kiln'])}",
            "",
            "| engine | median ms | p90 ms | load ms | peak RSS MB | rounds ok |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for engine, label in ENGINES:
            summ = s[engine]
            cells = [fmt(summ and summ[k], 2 if k.endswith("_ms") else 1) for k in KEYS]
            ok = args.rounds - len(errors[engine])
            out.append(f"| {label} | " + " | ".join(cells) + f" | {ok}/{args.rounds} |")
        for engine, label in ENGINES:
            for err in sorted(set(errors[engine])):
                out.append(f"\n{label} error: `{err}`")
        out.append("")

    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
