// The `dgr` executable: parse flags and config, start the World (MPI), run one subcommand; on any error
// log it on this rank in one line and end the whole job non-zero so no rank hangs.
#include <unistd.h>

#include <iostream>

#include "common/error.h"
#include "common/signals.h"
#include "common/log.h"
#include "common/world.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "launcher/startup.h"
#include "launcher/version.h"
#include "trainer/device.h"

namespace {

// Exit codes (documented in the README).
constexpr int kExitError = 1;        // a run failed (data, I/O, communication, ...)
constexpr int kExitConfigError = 2;  // bad flags or config file

const CLI::App* selected_leaf(const CLI::App& app) {
  const CLI::App* current = &app;
  while (true) {
    auto subs = current->get_subcommands();
    if (subs.empty()) return current;
    current = subs.front();
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dgr;
  CLI::App app{"dgr: distillation-enhanced generative retrieval, trained data-parallel with MPI/NCCL", "dgr"};
  launcher::GlobalOptions global;
  launcher::add_global_options(app, global);
  launcher::CommandTable commands;
  launcher::add_data_commands(app, commands);
  launcher::add_retrieval_commands(app, commands);
  launcher::add_train_commands(app, commands);
  launcher::add_index_commands(app, commands);
  launcher::add_distill_commands(app, commands);
  launcher::add_plot_commands(app, commands);
  launcher::show_flag_defaults(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "dgr: error: " << e.what() << " (see dgr --help)" << std::endl;
    return kExitConfigError;
  }
  if (global.version) {
    std::cout << launcher::version_report();
    return 0;
  }
  try {
    if (!global.config_file.empty()) launcher::apply_config_file(app, global.config_file);
  } catch (const Error& e) {
    std::cerr << "dgr: error: " << e.what() << std::endl;
    return kExitConfigError;
  }
  const CLI::App* leaf = selected_leaf(app);
  auto command = commands.find(leaf);
  if (command == commands.end()) {
    std::cerr << (leaf == &app ? app.help() : leaf->help());
    std::cerr << "dgr: error: choose a subcommand" << std::endl;
    return kExitConfigError;
  }

  // Training and mining catch the scheduler's stop signals from the start: a signal that arrives while MPI
  // starts or the data loads is then honoured at the first step (round) boundary instead of killing the process.
  const bool training = leaf->get_name() == "train";
  if (training || leaf->get_name() == "mine" || leaf->get_name() == "retrieve") signals::install_stop_handlers();

  launcher::remember_command_line(argc, argv);
  std::unique_ptr<World> world;
  try {
    world = std::make_unique<World>(&argc, &argv);
    log::init(global.log, world->rank(), world->size());
    auto env = launcher::launch_environment();
    launcher::check_launch_environment(*world, env);
    std::string restart = env.count("SLURM_RESTART_COUNT") ? env["SLURM_RESTART_COUNT"] : "0";
    // The device of the commands that run the model (--device); an impossible one (cuda without a GPU of
    // this rank's own) is a start-up error naming the rank. Other commands run on the CPU.
    std::string device = "cpu";
    if (const CLI::Option* option = leaf->get_option_no_throw("--device")) {
      device = trainer::resolve_device(option->as<std::string>(), *world).str();
    }
    log::get("dgr")->log(training ? spdlog::level::info : spdlog::level::debug,
                         "start: host={} pid={} rank={} local_rank={} world_size={} device={} slurm_job={} "
                         "slurm_restart_count={} versions=\"{}\"",
                         world->host(), ::getpid(), world->rank(), world->local_rank(), world->size(), device,
                         env.count("SLURM_JOB_ID") ? env["SLURM_JOB_ID"] : "-", restart, launcher::version_line());
    return command->second(*world);
  } catch (const std::exception& e) {
    bool config = dynamic_cast<const ConfigError*>(&e) != nullptr;
    std::string message = e.what();
    for (char& c : message) if (c == '\n' && !config) c = ' ';
    log::get("dgr")->error("{}", message);
    log::flush();
    int code = config ? kExitConfigError : kExitError;
    if (world && world->size() > 1) world->abort(code);
    return code;
  }
}
