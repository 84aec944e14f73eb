#!/usr/bin/env python3
"""Where the time goes, kiln next to ONNX Runtime, node by node.

    bench/compare_profile.py MODEL.onnx [--shape NAME=AxBxC] [--threads 2] [--runs 20] [--top 15]

Runs `kiln bench --trace` and `bench/ort_bench.js --profile` on the same model and input shape, then prints
for each engine: the median latency of its plain timed runs, the sum of its per-node medians, a table per
operator type and its slowest nodes. Each engine names operators its own way (ORT reports its fused nodes,
e.g. FusedConv, QuickGelu, ReorderInput/Output for its NCHWc layout; kiln reports the graph's op types after
its passes, with fused activations inside Conv, and kiln:LayoutConversion for its channels-last conversions),
so compare the totals of the groups, not the names. Profiling adds per-node overhead in both engines, and
the per-node medians come from different runs than the latency: use bench/run.sh for the ratios and this
to find which part of a gap to work on. Needs kiln built (build/kiln) and ORT installed (bench/setup.sh).
"""
import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_json(text):
    """The first JSON object in a harness's stdout (kiln prints it indented over many lines)."""
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def per_node(events):
    """{node: (op, [durations in ms])} in first-seen order, from (node, op, dur_us) triples."""
    nodes = collections.OrderedDict()
    for name, op, dur_us in events:
        nodes.setdefault(name, (op, []))[1].append(dur_us / 1000.0)
    return nodes


def run_harness(cmd, what):
    """Runs one harness (its --json output on stdout) and returns its median latency."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{what} failed: " + out.stderr.strip())
    return first_json(out.stdout)["median_ms"]


def kiln_profile(model, shape, threads, runs, tmp):
    trace = os.path.join(tmp, "kiln_trace.json")
    cmd = [os.path.join(ROOT, "build", "kiln"), "bench", model, "-t", str(threads), "--runs", str(runs), "--json",
           "--trace", trace] + (["-s", shape] if shape else [])
    median = run_harness(cmd, "kiln bench")
    ev = json.load(open(trace))["traceEvents"]
    events = [(e["name"], e["args"]["op"], e["dur"]) for e in ev if e.get("tid") == 1 and e.get("ph") == "X"]
    return median, per_node(events)


def ort_profile(model, shape, threads, runs, tmp):
    prefix = os.path.join(tmp, "ort")
    cmd = ["node", os.path.join(ROOT, "bench", "ort_bench.js"), model, "--threads", str(threads), "--runs", str(runs),
           "--json", "--profile", prefix] + (["--shape", shape] if shape else [])
    median = run_harness(cmd, "ort_bench.js")
    files = glob.glob(prefix + "*.json")
    if not files:
        sys.exit("ORT wrote no profile")
    events = []
    for e in json.load(open(files[0])):
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            events.append((e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"), e["dur"]))
    return median, per_node(events)


def report(title, median, nodes, top):
    # A name may occur several times per run (kiln's layout conversions all share one): its per-run time is the
    # median event times its occurrences per run. Runs profiled = the most common event count over the names.
    runs = statistics.mode(len(d) for _, d in nodes.values()) if nodes else 1
    med = {n: statistics.median(d) * max(1, round(len(d) / runs)) for n, (_, d) in nodes.items()}
    total = sum(med.values())
    print(f"\n== {title}: median latency {median:.3f} ms; per-node medians (x occurrences per run) sum to {total:.3f} ms"
          f" over {len(nodes)} nodes")
    by_op = collections.defaultdict(lambda: [0.0, 0])
    for n, (op, _) in nodes.items():
        by_op[op][0] += med[n]
        by_op[op][1] += 1
    print(f"  {'op type':32s} {'ms':>9s} {'%':>6s} {'nodes':>6s}")
    for op, (ms, cnt) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        print(f"  {op:32s} {ms:9.3f} {100 * ms / max(total, 1e-9):6.1f} {cnt:6d}")
    print(f"  slowest {min(top, len(nodes))} nodes:")
    for n in sorted(med, key=lambda k: -med[k])[:top]:
        print(f"  {med[n]:9.3f} ms  {nodes[n][0]:22s} {n[:70]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--shape", help="NAME=AxBxC, as for kiln bench / ort_bench.js (default: the model's, batch 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        k = kiln_profile(a.model, a.shape, a.threads, a.runs, tmp)
        o = ort_profile(a.model, a.shape, a.threads, a.runs, tmp)
    print(f"model {a.model}, input {a.shape or 'declared shape'}, {a.threads} threads, {a.runs} runs each")
    report("kiln", k[0], k[1], a.top)
    report("ONNX Runtime", o[0], o[1], a.top)
    print(f"\nORT/kiln latency ratio in these (profiled) runs: {o[0] / k[0]:.2f}")


if __name__ == "__main__":
    main()
