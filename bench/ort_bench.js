#!/usr/bin/env node
// Benchmark one ONNX model with onnxruntime-node, mirroring the `kiln bench` CLI:
//   node bench/ort_bench.js MODEL.onnx [--shape name=1x3x224x224]... [--threads N]
//                           [--runs N] [--warmup N] [--json] [--profile PREFIX]
// Every graph input gets a random float32 tensor. Without --shape, an input's
// shape comes from the model, with symbolic (dynamic) dims set to 1.
// --json prints one object: median_ms, p90_ms, load_ms, peak_rss_mb (+ extras).
// --profile PREFIX turns on ORT's own profiler: it writes PREFIX_<date>.json, a Chrome trace with
// one event per node per run (its node names, after ORT's fusions), for side-by-side comparison
// with `kiln bench --profile`. Profiling adds overhead; don't take latencies from such a run.
// Start-up, as in `kiln bench`: when KILN_BENCH_SPAWN_NS holds the CLOCK_REALTIME time (ns since the
// epoch) at which the caller spawned this process, the JSON adds boot_ms (spawn -> this script's
// first line: Node.js itself starting), first_output_ms_since_spawn (spawn -> first inference output
// ready: Node start, loading the onnxruntime addon, session creation with graph optimisation, input
// generation, first run), input_gen_ms and startup_ms = first_output_ms_since_spawn - input_gen_ms.
'use strict';
// Wall-clock now in ms since the epoch with sub-ms resolution (timeOrigin is the realtime stamp
// of the process start, performance.now() the monotonic time since then).
const realtimeMs = () => performance.timeOrigin + performance.now();
const entryMs = realtimeMs();  // before anything else is loaded
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

// KILN_BENCH_SPAWN_NS as ms since the epoch, or null when unset or malformed.
function spawnMs() {
  const v = process.env.KILN_BENCH_SPAWN_NS;
  if (!v) return null;
  if (!/^[0-9]+$/.test(v)) {
    console.error(`warning: ignoring KILN_BENCH_SPAWN_NS='${v}' (expected ns since the epoch)`);
    return null;
  }
  return Number(BigInt(v) / 1000n) / 1000;  // whole microseconds, exact in a double
}

function usage(msg) {
  if (msg) console.error(`error: ${msg}`);
  console.error('usage: ort_bench.js MODEL.onnx [--shape name=AxBxC]... [--threads N] ' +
                '[--runs N] [--warmup N] [--json] [--profile PREFIX]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { model: null, shapes: {}, threads: 2, runs: 20, warmup: 3, json: false, profile: null };
  const intArg = (i) => {
    const v = Number.parseInt(argv[i], 10);
    if (!Number.isInteger(v) || v < 0) usage(`bad value for ${argv[i - 1]}: ${argv[i]}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') opts.json = true;
    else if (a === '--threads') opts.threads = intArg(++i);
    else if (a === '--profile') opts.profile = argv[++i] || usage('--profile needs a file prefix');
    else if (a === '--runs') opts.runs = intArg(++i);
    else if (a === '--warmup') opts.warmup = intArg(++i);
    else if (a === '--shape') {
      const spec = argv[++i] || '';
      const eq = spec.lastIndexOf('=');
      if (eq <= 0) usage(`bad --shape ${spec}`);
      const dims = spec.slice(eq + 1).split('x').map(Number);
      if (dims.some((d) => !Number.isInteger(d) || d <= 0)) usage(`bad --shape ${spec}`);
      opts.shapes[spec.slice(0, eq)] = dims;
    } else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (opts.model === null) opts.model = a;
    else usage(`unexpected argument ${a}`);
  }
  if (opts.model === null) usage('missing MODEL.onnx');
  if (opts.runs < 1) usage('--runs must be >= 1');
  return opts;
}

// Deterministic standard-normal generator (mulberry32 + Box-Muller), seed 0.
function makeNormal(seed) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

// Linear-interpolated percentile of an ascending array (numpy's default method).
function percentile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function inputShape(session, name, opts) {
  if (opts.shapes[name]) return opts.shapes[name];
  const meta = (session.inputMetadata || []).find((m) => m.name === name);
  if (!meta || !meta.isTensor || !Array.isArray(meta.shape)) {
    usage(`cannot infer the shape of input '${name}'; pass --shape ${name}=...`);
  }
  return meta.shape.map((d) => (typeof d === 'number' && d > 0 ? d : 1));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const msSince = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

  let t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(opts.model, {
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    ...(opts.profile ? { enableProfiling: true, profileFilePrefix: opts.profile } : {}),
  });
  const loadMs = msSince(t0);

  for (const name of Object.keys(opts.shapes)) {
    if (!session.inputNames.includes(name)) usage(`model has no input named '${name}'`);
  }
  const genStart = process.hrtime.bigint();
  const normal = makeNormal(0);
  const feeds = {};
  const shapes = {};
  for (const name of session.inputNames) {
    const dims = inputShape(session, name, opts);
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = normal();
    feeds[name] = new ort.Tensor('float32', data, dims);
    shapes[name] = dims.join('x');
  }
  const inputGenMs = msSince(genStart);

  // The first run counts as the first warm-up run (as in `kiln bench`).
  t0 = process.hrtime.bigint();
  await session.run(feeds);
  const firstRunMs = msSince(t0);
  const firstOutputMs = realtimeMs();
  for (let i = 1; i < opts.warmup; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < opts.runs; i++) {
    t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(msSince(t0));
  }
  times.sort((a, b) => a - b);

  const result = {
    engine: `onnxruntime-node ${require(path.join(__dirname, 'node_modules', 'onnxruntime-node', 'package.json')).version}`,
    model: opts.model,
    shapes,
    threads: opts.threads,
    runs: opts.runs,
    warmup: opts.warmup,
    median_ms: percentile(times, 0.5),
    p90_ms: percentile(times, 0.9),
    min_ms: times[0],
    mean_ms: times.reduce((a, b) => a + b, 0) / times.length,
    load_ms: loadMs,
    first_run_ms: firstRunMs,
    input_gen_ms: inputGenMs,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024, // maxRSS is in KiB
  };
  const spawn = spawnMs();
  if (spawn !== null) {
    result.boot_ms = entryMs - spawn;
    result.first_output_ms_since_spawn = firstOutputMs - spawn;
    result.startup_ms = result.first_output_ms_since_spawn - inputGenMs;
  }
  if (opts.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(`${opts.model}: median ${result.median_ms.toFixed(3)} ms, ` +
                `p90 ${result.p90_ms.toFixed(3)} ms, load ${result.load_ms.toFixed(1)} ms, ` +
                `peak RSS ${result.peak_rss_mb.toFixed(1)} MB`);
  }
  if (opts.profile) session.endProfiling();
  await session.release();
}

main().catch((err) => {
  console.error(`error: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
