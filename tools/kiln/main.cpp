// kiln command-line entry point: dispatches to one file per subcommand (cmd_*.cpp).
// Exit codes: 0 ok, 1 failure (verification mismatch, runtime error), 2 usage or bad input.
#include <CLI/CLI.hpp>

#include "common.h"

namespace kiln::cli { void add_segment_command(CLI::App& app, int* rc); }  // cmd_segment.cpp

int main(int argc, char** argv) {
  using namespace kiln::cli;
  CLI::App app{"kiln: run, verify, benchmark and inspect ONNX models on the CPU"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  kiln run examples/digits/model.onnx --input examples/digits/samples.npy --labels examples/digits/labels.npy\n"
      "  kiln verify path/to/onnx-test-case/\n"
      "  kiln bench model.onnx --shape input=1x3x224x224 --profile\n"
      "  kiln show model.onnx\n"
      "Exit codes: 0 ok, 1 failure (mismatch or runtime error), 2 usage error or bad input.");
  int rc = 0;
  add_run_command(app, &rc);
  add_verify_command(app, &rc);
  add_bench_command(app, &rc);
  add_show_command(app, &rc);
  add_segment_command(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  return rc;
}
