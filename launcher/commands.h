// The subcommands of `dgr`. Each adds its options to the CLI (defined once: --help and the config file
// keys come from the same definition) and registers what runs when it is selected.
#pragma once

#include <functional>
#include <map>

#include <CLI/CLI.hpp>

#include "common/world.h"

namespace dgr::launcher {

using CommandFn = std::function<int(const World&)>;
// [leaf subcommand] -> what it runs; the leaf that was parsed is run by main.
using CommandTable = std::map<const CLI::App*, CommandFn>;

// Help of the `--device` option of the commands that run the model (train, retrieve, mine).
inline constexpr const char* kDeviceHelp =
    "Where the model runs: auto (cuda when LibTorch sees a GPU, else cpu), cpu, or cuda (one GPU per rank: "
    "GPU = local rank)";

// `dgr data build-debian` and `dgr data check`.
void add_data_commands(CLI::App& app, CommandTable& table);

// `dgr evaluate`, `dgr report` and `dgr bm25`.
void add_retrieval_commands(CLI::App& app, CommandTable& table);
// `dgr report`: the systems' table with seeds and significance marks (commands_report.cpp).
void add_report_command(CLI::App& app, CommandTable& table);
void add_index_commands(CLI::App& app, CommandTable& table);  // `dgr index` (commands_index.cpp)

// `dgr train`, `dgr retrieve` and `dgr export`.
void add_train_commands(CLI::App& app, CommandTable& table);

// `dgr plot`: training curves from OUT/train.jsonl to a PNG (commands_plot.cpp).
void add_plot_commands(CLI::App& app, CommandTable& table);

// `dgr mine`, `dgr teacher import|bm25` and `dgr prepare`: the distillation data (commands_distill.cpp).
void add_distill_commands(CLI::App& app, CommandTable& table);

}  // namespace dgr::launcher
