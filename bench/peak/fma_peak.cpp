// fma_peak: measures this machine's fp32 fused-multiply-add peak (GFLOP/s) for AVX2 (8 floats per
// vector) and, when the CPU reports avx512f, AVX-512 (16 floats per vector), with 1 thread and with
// N threads (OpenMP), and prints one JSON object. bench/run.sh uses it as the roofline's compute peak.
//
//   g++ -O2 -fopenmp -o fma_peak bench/peak/fma_peak.cpp
//   fma_peak [--threads N] [--seconds S] [--trials T]
//
// Each thread runs a loop of independent FMA chains (enough accumulators to hide the FMA latency
// on two FMA ports: 12 ymm / 24 zmm chains), so the loop is bound by FMA throughput only.
// One FMA on a W-float vector counts 2*W flops. Each (ISA, thread count) is measured T times
// for about S seconds and the best trial is reported (the peak; a busy machine only lowers it).
// Every ISA runs in a forked child process, so a CPU that advertises an ISA it cannot execute
// (SIGILL) yields an "error" entry instead of killing the measurement; the parent never starts
// OpenMP threads before forking.
#include <immintrin.h>
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile float g_sink;  // keeps the accumulators' final values observable

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Runs `iters` iterations of 12 independent 8-wide FMA chains; returns the flops done.
__attribute__((target("avx2,fma"), noinline)) double fma_avx2(long iters) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  __m256 c0 = _mm256_set1_ps(0.f), c1 = _mm256_set1_ps(1.f), c2 = _mm256_set1_ps(2.f), c3 = _mm256_set1_ps(3.f);
  __m256 c4 = _mm256_set1_ps(4.f), c5 = _mm256_set1_ps(5.f), c6 = _mm256_set1_ps(6.f), c7 = _mm256_set1_ps(7.f);
  __m256 c8 = _mm256_set1_ps(8.f), c9 = _mm256_set1_ps(9.f), c10 = _mm256_set1_ps(10.f), c11 = _mm256_set1_ps(11.f);
  for (long i = 0; i < iters; ++i) {
    c0 = _mm256_fmadd_ps(c0, a, b);
    c1 = _mm256_fmadd_ps(c1, a, b);
    c2 = _mm256_fmadd_ps(c2, a, b);
    c3 = _mm256_fmadd_ps(c3, a, b);
    c4 = _mm256_fmadd_ps(c4, a, b);
    c5 = _mm256_fmadd_ps(c5, a, b);
    c6 = _mm256_fmadd_ps(c6, a, b);
    c7 = _mm256_fmadd_ps(c7, a, b);
    c8 = _mm256_fmadd_ps(c8, a, b);
    c9 = _mm256_fmadd_ps(c9, a, b);
    c10 = _mm256_fmadd_ps(c10, a, b);
    c11 = _mm256_fmadd_ps(c11, a, b);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
  float out[8];
  _mm256_storeu_ps(out, s);
  g_sink = out[0] + out[7];
  return 12.0 * 8 * 2 * (double)iters;
}

// The same with 24 independent 16-wide chains (AVX-512 has 32 zmm registers).
__attribute__((target("avx512f"), noinline)) double fma_avx512(long iters) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  // Written out by hand so that every chain stays in a register.
  __m512 c0 = _mm512_set1_ps(0.f), c1 = _mm512_set1_ps(1.f), c2 = _mm512_set1_ps(2.f), c3 = _mm512_set1_ps(3.f);
  __m512 c4 = _mm512_set1_ps(4.f), c5 = _mm512_set1_ps(5.f), c6 = _mm512_set1_ps(6.f), c7 = _mm512_set1_ps(7.f);
  __m512 c8 = _mm512_set1_ps(8.f), c9 = _mm512_set1_ps(9.f), c10 = _mm512_set1_ps(10.f), c11 = _mm512_set1_ps(11.f);
  __m512 c12 = _mm512_set1_ps(12.f), c13 = _mm512_set1_ps(13.f), c14 = _mm512_set1_ps(14.f);
  __m512 c15 = _mm512_set1_ps(15.f), c16 = _mm512_set1_ps(16.f), c17 = _mm512_set1_ps(17.f);
  __m512 c18 = _mm512_set1_ps(18.f), c19 = _mm512_set1_ps(19.f), c20 = _mm512_set1_ps(20.f);
  __m512 c21 = _mm512_set1_ps(21.f), c22 = _mm512_set1_ps(22.f), c23 = _mm512_set1_ps(23.f);
  for (long i = 0; i < iters; ++i) {
    c0 = _mm512_fmadd_ps(c0, a, b);
    c1 = _mm512_fmadd_ps(c1, a, b);
    c2 = _mm512_fmadd_ps(c2, a, b);
    c3 = _mm512_fmadd_ps(c3, a, b);
    c4 = _mm512_fmadd_ps(c4, a, b);
    c5 = _mm512_fmadd_ps(c5, a, b);
    c6 = _mm512_fmadd_ps(c6, a, b);
    c7 = _mm512_fmadd_ps(c7, a, b);
    c8 = _mm512_fmadd_ps(c8, a, b);
    c9 = _mm512_fmadd_ps(c9, a, b);
    c10 = _mm512_fmadd_ps(c10, a, b);
    c11 = _mm512_fmadd_ps(c11, a, b);
    c12 = _mm512_fmadd_ps(c12, a, b);
    c13 = _mm512_fmadd_ps(c13, a, b);
    c14 = _mm512_fmadd_ps(c14, a, b);
    c15 = _mm512_fmadd_ps(c15, a, b);
    c16 = _mm512_fmadd_ps(c16, a, b);
    c17 = _mm512_fmadd_ps(c17, a, b);
    c18 = _mm512_fmadd_ps(c18, a, b);
    c19 = _mm512_fmadd_ps(c19, a, b);
    c20 = _mm512_fmadd_ps(c20, a, b);
    c21 = _mm512_fmadd_ps(c21, a, b);
    c22 = _mm512_fmadd_ps(c22, a, b);
    c23 = _mm512_fmadd_ps(c23, a, b);
  }
  __m512 s0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                            _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
  __m512 s1 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                            _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15)));
  __m512 s2 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c16, c17), _mm512_add_ps(c18, c19)),
                            _mm512_add_ps(_mm512_add_ps(c20, c21), _mm512_add_ps(c22, c23)));
  float out[16];
  _mm512_storeu_ps(out, _mm512_add_ps(s0, _mm512_add_ps(s1, s2)));
  g_sink = out[0] + out[15];
  return 24.0 * 16 * 2 * (double)iters;
}

using Kernel = double (*)(long);

// Best GFLOP/s over `trials` runs of `threads` threads, each trial lasting about `seconds`.
// All threads start together after a barrier; the wall time of the slowest defines the trial.
double measure(Kernel k, int threads, double seconds, int trials) {
  // Calibrate the iteration count on one thread so that a trial takes about `seconds`.
  long iters = 1 << 16;
  for (;;) {
    double t0 = now_s();
    k(iters);
    double dt = now_s() - t0;
    if (dt > 0.02 || iters > (1L << 40)) {
      iters = (long)((double)iters * seconds / (dt > 0 ? dt : 1e-9));
      break;
    }
    iters *= 4;
  }
  if (iters < 1) iters = 1;
  double best = 0;
  for (int t = 0; t < trials; ++t) {
    double flops = 0, start = 0, end = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    {
      k(iters / 64);  // warm up (clock ramp, AVX-512 licence switch) outside the timed region
#pragma omp barrier
#pragma omp master
      start = now_s();
      flops += k(iters);
#pragma omp barrier
#pragma omp master
      end = now_s();
    }
    double g = flops / (end - start) / 1e9;
    if (g > best) best = g;
  }
  return best;
}

// Runs `body` in a forked child and returns what it wrote to the pipe ("" on failure, with *why set).
std::string in_child(const std::string& what, std::string (*body)(int, double, int), int threads, double seconds,
                     int trials, std::string* why) {
  int fd[2];
  if (pipe(fd) != 0) {
    *why = "pipe failed";
    return "";
  }
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    *why = "fork failed";
    return "";
  }
  if (pid == 0) {
    close(fd[0]);
    std::string s = body(threads, seconds, trials);
    ssize_t off = 0;
    while (off < (ssize_t)s.size()) {
      ssize_t w = write(fd[1], s.data() + off, s.size() - off);
      if (w <= 0) _exit(3);
      off += w;
    }
    _exit(0);
  }
  close(fd[1]);
  std::string out;
  char buf[256];
  ssize_t r;
  while ((r = read(fd[0], buf, sizeof buf)) > 0) out.append(buf, (size_t)r);
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) {
    *why = what + " measurement killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
    return "";
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *why = what + " measurement failed";
    return "";
  }
  return out;
}

std::string json_result(Kernel k, int threads, double seconds, int trials) {
  double one = measure(k, 1, seconds, trials);
  double all = threads == 1 ? one : measure(k, threads, seconds, trials);
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"gflops_1_thread\": %.1f, \"gflops\": %.1f}", one, all);
  return buf;
}

std::string run_avx2(int threads, double seconds, int trials) { return json_result(fma_avx2, threads, seconds, trials); }
std::string run_avx512(int threads, double seconds, int trials) {
  return json_result(fma_avx512, threads, seconds, trials);
}

[[noreturn]] void usage(const char* msg) {
  if (msg) std::fprintf(stderr, "error: %s\n", msg);
  std::fprintf(stderr, "usage: fma_peak [--threads N] [--seconds S] [--trials T]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  double seconds = 0.25;
  int trials = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    char* end = nullptr;
    if (a == "--threads") {
      long v = std::strtol(value(), &end, 10);
      if (*end || v < 1 || v > 4096) usage("--threads must be an integer in [1, 4096]");
      threads = (int)v;
    } else if (a == "--seconds") {
      seconds = std::strtod(value(), &end);
      if (*end || !(seconds > 0 && seconds <= 60)) usage("--seconds must be in (0, 60]");
    } else if (a == "--trials") {
      long v = std::strtol(value(), &end, 10);
      if (*end || v < 1 || v > 1000) usage("--trials must be an integer in [1, 1000]");
      trials = (int)v;
    } else if (a == "-h" || a == "--help") {
      usage(nullptr);
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }

  __builtin_cpu_init();
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool has_avx512 = __builtin_cpu_supports("avx512f");
  std::string out = "{\"threads\": " + std::to_string(threads) + ", \"seconds_per_trial\": " + std::to_string(seconds) +
                    ", \"trials\": " + std::to_string(trials) + ", \"flops_per_fma_lane\": 2";
  out += std::string(", \"cpu_avx2_fma\": ") + (has_avx2 ? "true" : "false");
  out += std::string(", \"cpu_avx512f\": ") + (has_avx512 ? "true" : "false");
  struct Isa {
    const char* name;
    bool supported;
    std::string (*body)(int, double, int);
  } isas[] = {{"avx2", has_avx2, run_avx2}, {"avx512", has_avx512, run_avx512}};
  for (auto& isa : isas) {
    out += std::string(", \"") + isa.name + "\": ";
    if (!isa.supported) {
      out += "null";
      continue;
    }
    std::string why;
    std::string r = in_child(isa.name, isa.body, threads, seconds, trials, &why);
    out += r.empty() ? "{\"error\": \"" + why + "\"}" : r;
  }
  out += "}";
  std::printf("%s\n", out.c_str());
  return 0;
}
