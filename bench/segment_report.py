#!/usr/bin/python3
"""Summarise a bench/segment_bench.sh run into bench/SEGMENT_RESULTS.md.

Reads the raw folder the shell script wrote:
  <case>.<round>.rc / .time (/usr/bin/time -v) / .log (kiln's output) / .out/<case>.nii.gz
  net.<round>.json / .rc (`kiln bench --json` of one batch of 8 mirrored views)
and the reference folder's README.md (nnU-Net's recorded times and the tiles per fold of each case) and
expected/ (nnU-Net's segmentations, to check that the timed runs produced the right answer).
Usage: bench/segment_report.py RAW_DIR --cases-dir DIR [--out FILE] [...metadata]
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys

CASES = ["case_B", "case_C"]
# Fallbacks if the README cannot be parsed (values recorded there on 2024's reference run).
DEFAULT_NNUNET_S = {"case_B": 22.9, "case_C": 10.3}
DEFAULT_TILES = {"case_B": 8, "case_C": 4}


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def parse_readme(text):
    """nnU-Net's times ('case_B 22.9 s') and tiles per fold (last column of the cases table)."""
    times, tiles = {}, {}
    for c in CASES:
        m = re.search(re.escape(c) + r"\s+([0-9.]+)\s*s\b", text)
        if m:
            times[c] = float(m.group(1))
        for line in text.splitlines():
            cells = [x.strip() for x in line.strip().strip("|").split("|")]
            if len(cells) > 2 and cells[0] == c and cells[-1].isdigit():
                tiles[c] = int(cells[-1])
    return times, tiles


def parse_time_v(text):
    """Wall seconds and peak RSS (MiB) from /usr/bin/time -v output; None where absent."""
    wall = rss = None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*([0-9:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        wall = 0.0
        for p in parts:
            wall = wall * 60 + p
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", text)
    if m:
        rss = int(m.group(1)) / 1024.0
    return wall, rss


def parse_kiln_rss(log):
    """Peak RSS if kiln's own summary prints one ('peak RSS 123.4 MiB' or 'peak_rss_mb: 123.4')."""
    m = re.findall(r"peak[ _]RSS[^0-9]{0,8}([0-9]+(?:\.[0-9]+)?)\s*(MiB|MB|GiB|GB)?", log, re.IGNORECASE)
    if not m:
        return None
    v, unit = m[-1]
    return float(v) * (1024.0 if unit.upper().startswith("G") else 1.0)


def compare_seg(got_path, expected_path, gt_path):
    """(differing voxels, total voxels, affine equal, Dice per foreground label vs ground truth) or an error."""
    try:
        import nibabel as nib
        import numpy as np
    except ImportError as e:
        return {"error": f"cannot check: {e}"}
    if not os.path.exists(got_path):
        return {"error": "no output file"}
    try:
        got_img = nib.load(got_path)
        got = np.asarray(got_img.dataobj)
        exp_img = nib.load(expected_path)
        exp = np.asarray(exp_img.dataobj)
    except Exception as e:  # a broken output file is a result to report, not a crash
        return {"error": f"unreadable: {e}"}
    if got.shape != exp.shape:
        return {"error": f"shape {got.shape} != expected {exp.shape}"}
    res = {"diff": int((got != exp).sum()), "total": int(exp.size),
           "affine_equal": bool(np.allclose(got_img.affine, exp_img.affine, rtol=0, atol=1e-5))}
    if os.path.exists(gt_path):
        gt = np.asarray(nib.load(gt_path).dataobj)
        res["dice"] = {int(v): 2.0 * ((got == v) & (gt == v)).sum() / max(int((got == v).sum() + (gt == v).sum()), 1)
                       for v in np.unique(gt) if v != 0}
    return res


def fmt_s(x):
    return "—" if x is None else f"{x:.2f} s"


def fmt_mb(x):
    return "—" if x is None else f"{x:.0f} MiB"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine():
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo"))
    return (f"{cpu or platform.processor() or 'unknown CPU'}, {os.cpu_count()} logical CPUs"
            + (f", {int(mem.group(1)) / 1024 / 1024:.1f} GiB RAM" if mem else "")
            + f", {platform.system()} {platform.release()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--cases-dir", required=True)
    ap.add_argument("--out", default=None, help="markdown file (default: print to stdout)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", default="0 1")
    ap.add_argument("--command", default="bench/segment_bench.sh")
    ap.add_argument("--date", default="")
    ap.add_argument("--load-start", default="")
    ap.add_argument("--kiln", default="kiln")
    a = ap.parse_args()

    n_folds = len(a.folds.split())
    readme = read(os.path.join(a.cases_dir, "README.md"))
    times, tiles = parse_readme(readme)
    notes = []
    for c in CASES:
        if c not in times:
            times[c] = DEFAULT_NNUNET_S[c]
            notes.append(f"{c}: nnU-Net time not found in the README, using {DEFAULT_NNUNET_S[c]} s")
        if c not in tiles:
            tiles[c] = DEFAULT_TILES[c]
            notes.append(f"{c}: tile count not found in the README, using {DEFAULT_TILES[c]}")

    # bare network: median over rounds of each process's median batch time
    net_ms, net_rss, net_errors = [], [], []
    for r in range(a.rounds):
        rc = read(os.path.join(a.raw, f"net.{r}.rc"), "?").strip()
        try:
            j = json.loads(read(os.path.join(a.raw, f"net.{r}.json")))
            net_ms.append(float(j["median_ms"]))
            net_rss.append(j.get("peak_rss_mb"))
        except (ValueError, KeyError, TypeError):
            err = read(os.path.join(a.raw, f"net.{r}.stderr")).strip().splitlines()
            net_errors.append(f"round {r + 1}: kiln bench failed (exit {rc}): {err[-1] if err else 'no output'}")
    batch_ms = median(net_ms)

    rows, details = [], []
    for c in CASES:
        walls, rsses, errors, checks = [], [], [], []
        for r in range(a.rounds):
            base = os.path.join(a.raw, f"{c}.{r}")
            rc = read(base + ".rc", "?").strip()
            wall, rss = parse_time_v(read(base + ".time"))
            log = read(base + ".log")
            if rc != "0":
                tail = [l for l in log.strip().splitlines() if l.strip()][-1:] or ["no output"]
                errors.append(f"round {r + 1}: exit {rc}" + (" (timeout)" if rc == "124" else "") + f": {tail[0]}")
                continue
            walls.append(wall)
            rsses.append(rss if rss is not None else parse_kiln_rss(log))
            checks.append(compare_seg(os.path.join(base + ".out", c + ".nii.gz"),
                                      os.path.join(a.cases_dir, "expected", c + ".nii.gz"),
                                      os.path.join(a.cases_dir, "ground_truth", c + ".nii.gz")))
        e2e = median(walls)
        evals = tiles[c] * n_folds
        net_s = batch_ms * evals / 1000.0 if batch_ms is not None else None
        overhead = (e2e - net_s) / e2e if e2e and net_s is not None else None
        speedup = times[c] / e2e if e2e else None
        chk = checks[-1] if checks else {"error": "no successful run"}
        if "error" in chk:
            correct = f"not checked ({chk['error']})"
        else:
            correct = (f"{chk['diff']} of {chk['total']} voxels differ from nnU-Net"
                       + ("" if chk["affine_equal"] else ", AFFINE DIFFERS")
                       + ("; Dice vs truth " + ", ".join(f"{k}: {v:.4f}" for k, v in chk["dice"].items())
                          if chk.get("dice") else ""))
        rows.append([c, f"{len(walls)}/{a.rounds}", fmt_s(e2e), fmt_s(times[c]),
                     "—" if speedup is None else f"{speedup:.1f}×", f"{evals} × 8 views", fmt_s(net_s),
                     "—" if overhead is None else f"{100 * overhead:.1f} %", fmt_mb(max([x for x in rsses if x is not None], default=None))])
        details.append((c, walls, errors, correct, log_summary(a.raw, c, a.rounds)))

    L = []
    L.append("# kiln segment vs nnU-Net's predictor (reference cases)\n")
    L.append("Generated by `bench/segment_bench.sh` (bench/segment_report.py); do not edit by hand.\n")
    L.append(f"* date: {a.date or 'unknown'}")
    L.append(f"* command: `{a.command}`")
    L.append(f"* machine: {machine()}; load average at start {a.load_start or 'unknown'}")
    L.append(f"* kiln: {a.kiln}")
    L.append(f"* settings: folds {a.folds}, step 0.5, mirroring on (8 views per tile), {a.threads} threads, "
             f"{a.rounds} interleaved rounds, each run a fresh process")
    L.append(f"* reference: `{a.cases_dir}` (nnU-Net v2 2.8.1 predictor, PyTorch 1.13 CPU, 2 threads; its times are "
             "the fastest of several runs on a 2-core machine like this one, recorded in that folder's README)\n")
    L.append("| case | runs ok | kiln end-to-end (median) | nnU-Net predictor | speed-up | network evaluations "
             "| bare network | pipeline overhead | peak RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("* **end-to-end**: wall clock of `kiln segment` (/usr/bin/time), process start to exit: reading the NIfTI, "
             "preprocessing, the sliding window over both folds, export resampling, writing the output.")
    L.append("* **bare network**: median of `kiln bench fold_0/model.onnx --shape input=8x2x32x64x64` "
             f"({'—' if batch_ms is None else f'{batch_ms:.1f} ms'} per batch of one tile's 8 mirrored views, "
             f"median of {len(net_ms)} process(es)) × tiles per fold × folds. "
             "**pipeline overhead** = (end-to-end − bare network) / end-to-end: everything that is not the network.")
    L.append("* **peak RSS**: maximum resident set size of the segment process (/usr/bin/time -v), largest over the rounds.")
    L.append("* The nnU-Net times were not measured in this run (nnunetv2 is not installed here); the machine is noisy "
             "(runs varied 2–5×), so the speed-up is indicative only.\n")
    L.append("## Per case\n")
    for c, walls, errors, correct, summary in details:
        L.append(f"### {c}\n")
        L.append(f"* end-to-end times: {', '.join(fmt_s(w) for w in walls) or 'none'}")
        L.append(f"* output check (last round): {correct}")
        for e in errors:
            L.append(f"* FAILED {e}")
        if summary:
            L.append("* kiln's own summary (last successful round):\n")
            L.append("```")
            L.extend(summary)
            L.append("```")
        L.append("")
    if net_errors or notes:
        L.append("## Notes\n")
        L.extend(f"* {x}" for x in net_errors + notes)
        L.append("")
    text = "\n".join(L)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        print(f"wrote {a.out}")
    else:
        sys.stdout.write(text)
    failed = any(d[2] for d in details) or batch_ms is None
    return 1 if failed else 0


def log_summary(raw, case, rounds, max_lines=25):
    for r in reversed(range(rounds)):
        base = os.path.join(raw, f"{case}.{r}")
        if read(base + ".rc").strip() == "0":
            lines = [l.rstrip() for l in read(base + ".log").splitlines() if l.strip()]
            return lines[-max_lines:]
    return []


if __name__ == "__main__":
    sys.exit(main())
