// Per-rank logging: one console sink (rank 0 at info, other ranks at warn) and one file per rank at
// debug. Every line carries the rank zero-padded: "[2026-01-01 12:00:00.123] [r03/16] [info] [comm] ...".
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace dgr::log {

struct Options {
  std::string dir;              // where rank files go ("" = no files): DIR/dgr.rNN.log
  std::string console_level = "info";  // rank 0's console level; other ranks show warnings and errors
  std::string file_level = "debug";
};

// Sets up the sinks for this rank. Call once per process after the World exists; before that (or when
// never called) loggers write to stderr with rank 0 of 1.
void init(const Options& options, int rank, int world_size);

// A named logger ("comm", "data", ...) sharing this rank's sinks.
std::shared_ptr<spdlog::logger> get(const std::string& name);

// The "[rNN/MM]" tag of this rank, as it appears in every line.
std::string rank_tag(int rank, int world_size);

// Flushes every logger (call before exiting on an error).
void flush();

}  // namespace dgr::log
