// Driver of the resume-on-another-world-size test (resume_world_size_test.sh): trains the toy run until
// --stop-at steps, resuming from --dir when it holds a checkpoint, and logs the examples each rank saw.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/log.h"
#include "common/world.h"
#include "tests/toy_training.h"

int main(int argc, char** argv) {
  dgr::testing::ToyRunOptions options;
  std::string seen_prefix;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dir") options.checkpoint_dir = value;
    else if (flag == "--stop-at") options.stop_at_step = std::stoll(value);
    else if (flag == "--seen") seen_prefix = value;
    else if (flag == "--step-delay-ms") options.step_delay_ms = std::stoi(value);
    else { std::fprintf(stderr, "usage: resume_driver --dir D --stop-at N --seen PREFIX [--step-delay-ms MS]\n"); return 2; }
  }
  dgr::World world(&argc, &argv);
  dgr::log::init(dgr::log::Options{}, world.rank(), world.size());
  options.seen_file = seen_prefix + ".r" + std::to_string(world.rank());
  auto result = dgr::testing::run_toy_training(options, world);
  if (world.is_root()) {
    std::printf("world_size=%d first_step=%lld steps_run=%zu resumed_parameters=%s final_parameters=%s\n", world.size(),
                static_cast<long long>(result.first_step), result.losses.size(),
                result.resumed_parameters_hash.empty() ? "none" : result.resumed_parameters_hash.c_str(),
                result.final_parameters_hash.c_str());
  }
  return 0;
}
