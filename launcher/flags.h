// The option groups of trainer/options.h as flags, each group in one function (and so its config keys,
// Note [Config keys]), reused by `dgr train` (both stages), `dgr retrieve` and `dgr mine`. A new shared flag
// is one line in one function. Range checks say what is wrong in words: "--epochs: must be at least 1".
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "trainer/options.h"

namespace dgr::launcher {

// Validators whose errors read "must be at least 1", "must be between 0 and 1", "must be more than 0".
CLI::Validator at_least(double min);
CLI::Validator more_than(double min);
CLI::Validator between(double min, double max);

// Flags whose default differs between `dgr train --stage generate` and `--stage distill`. Each is bound
// to the generate default; --help shows both ("15 (distill: 3)"); apply_distill_defaults() gives the
// distill default to every such flag that was set neither on the command line nor in the config file.
class StagedDefaults {
 public:
  template <class T>
  CLI::Option* add(CLI::App& app, const std::string& flag, T& field, const T& distill, const std::string& help) {
    CLI::Option* option = app.add_option(flag, field, help);
    if (distill != field) option->default_str(fmt::format("{} (distill: {})", field, distill));
    distill_.push_back([option, &field, distill] {
      if (option->count() == 0) field = distill;
    });
    return option;
  }
  void apply_distill_defaults() const {
    for (const auto& apply : distill_) apply();
  }

 private:
  std::vector<std::function<void()>> distill_;
};

// Which retrieval flags a command has: the views flag's name (`train` searches --eval-views, as --views
// names the views it trains) and --depth.
struct RetrievalFlags {
  std::string views_flag = "--views";
  bool depth = true;
};

void add_retrieval_flags(CLI::App& app, trainer::RetrievalSettings& settings, const RetrievalFlags& which = {});
// --device (and --precision when `precision` is given), --threads.
void add_device_flags(CLI::App& app, trainer::DeviceOptions& options, bool precision);

// Every flag of trainer::TrainOptions, for `dgr train`.
void add_train_flags(CLI::App& app, trainer::TrainOptions& options, StagedDefaults& staged);

}  // namespace dgr::launcher
