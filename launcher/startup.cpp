// Launch-environment checks and thread count (see startup.h).
#include "launcher/startup.h"

#include <cstdlib>
#include <thread>
#include <vector>

#include "common/error.h"

namespace dgr::launcher {

std::map<std::string, std::string> launch_environment() {
  std::map<std::string, std::string> env;
  for (const char* name : {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT",
                           "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "WORLD_SIZE",
                           "RANK", "LOCAL_RANK"}) {
    if (const char* value = std::getenv(name)) env[name] = value;
  }
  return env;
}

void check_launch_environment(const World& world, const std::map<std::string, std::string>& env) {
  std::vector<std::string> problems;
  auto check = [&](const char* name, int actual, const char* what, const char* hint) {
    auto it = env.find(name);
    if (it == env.end()) return;
    char* end = nullptr;
    long value = std::strtol(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0') {
      problems.push_back(fmt::format("{}='{}' is not a number", name, it->second));
    } else if (value != actual) {
      problems.push_back(fmt::format("MPI {} is {} but {}={} ({})", what, actual, name, value, hint));
    }
  };
  const char* slurm_hint = "start one MPI process per Slurm task: srun --mpi=pmix, or mpirun inside the allocation "
                           "without -n, and match --ntasks";
  // Under mpirun inside an allocation the SLURM_* variables describe the step that started Open MPI's
  // daemons (on a remote node SLURM_NTASKS=1), not the MPI job: only check them when Open MPI did not
  // launch us (srun launched every rank directly).
  if (env.find("OMPI_COMM_WORLD_SIZE") == env.end()) {
    check("SLURM_NTASKS", world.size(), "world size", slurm_hint);
    check("SLURM_PROCID", world.rank(), "rank", slurm_hint);
    check("SLURM_LOCALID", world.local_rank(), "local rank", slurm_hint);
  }
  check("OMPI_COMM_WORLD_SIZE", world.size(), "world size", "is another MPI library's mpirun in PATH?");
  check("OMPI_COMM_WORLD_RANK", world.rank(), "rank", "is another MPI library's mpirun in PATH?");
  check("OMPI_COMM_WORLD_LOCAL_RANK", world.local_rank(), "local rank", "is another MPI library's mpirun in PATH?");
  // torchrun (and torch.distributed.launch) set these and start N copies that MPI sees as N singletons, which
  // would each train alone into the same output directory.
  const char* torchrun_hint = "dgr is started by MPI, not torchrun: launch N ranks with `mpirun -n N dgr ...` or "
                              "`srun --mpi=pmix dgr ...` (unset WORLD_SIZE/RANK/LOCAL_RANK if they come from elsewhere)";
  check("WORLD_SIZE", world.size(), "world size", torchrun_hint);
  check("RANK", world.rank(), "rank", torchrun_hint);
  check("LOCAL_RANK", world.local_rank(), "local rank", torchrun_hint);
  if (problems.empty()) return;
  std::string message = "the launch environment disagrees with MPI: ";
  for (size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
  throw ConfigError(message);
}

int threads_per_rank(int requested, const World& world) {
  if (requested > 0) return requested;
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, world.local_size()));
}

namespace {
std::string& command_line_text() {
  static std::string text;
  return text;
}
}  // namespace

void remember_command_line(int argc, char** argv) {
  std::string& out = command_line_text();
  out.clear();
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    const bool plain = !arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789-_./=:,+@%") == std::string::npos;
    if (!plain) {
      std::string quoted = "'";
      for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      arg = quoted + "'";
    }
    out += (i ? " " : "") + arg;
  }
}

const std::string& command_line() { return command_line_text(); }

}  // namespace dgr::launcher
