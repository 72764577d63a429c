// Options shared by every subcommand and the TOML config file whose keys mirror the flags.
// Note [Config keys]: a flag `--name` of subcommand `a b` is the key `name` in table `[a.b]`; top-level
// flags are top-level keys. Flags given on the command line win over the file.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "common/log.h"

namespace dgr::launcher {

struct GlobalOptions {
  std::string config_file;  // TOML file with defaults for any flag
  log::Options log;
  bool version = false;
};

// Adds --config, --log-dir, --log-level, --version to `app` and makes every option show its default.
void add_global_options(CLI::App& app, GlobalOptions& options);

// Appends "(default: off)" to the help of every flag of `app` and its subcommands (call once all are added).
void show_flag_defaults(CLI::App& app);

// Applies the TOML file's keys to the parsed `app` (only to options not given as flags). Throws one
// ConfigError listing every problem: syntax errors, unknown keys or tables, values of the wrong type.
void apply_config_file(CLI::App& app, const std::string& path);

// The resolved values of every option of subcommand `leaf` (given, from the config file, or defaults) as a
// TOML file that `dgr --config FILE SUBCOMMAND` reads back to the same values (Note [Config keys]): one table
// for the subcommand, flags given as `name = true`. Run-dir records (OUT/attempts/attempt-N.toml).
std::string resolved_config_toml(const CLI::App& leaf);

}  // namespace dgr::launcher
