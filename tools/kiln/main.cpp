// kiln command-line entry point: dispatches to one file per subcommand.
#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  std::fprintf(stderr, "usage: kiln <run|verify|bench|show> ...\n");
  return 2;
}
