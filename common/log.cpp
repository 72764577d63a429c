// Per-rank spdlog sinks and named loggers.
#include "common/log.h"

#include <mutex>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "common/error.h"

namespace dgr::log {
namespace {

struct State {
  std::mutex mutex;
  std::vector<spdlog::sink_ptr> sinks;
  std::unordered_map<std::string, std::shared_ptr<spdlog::logger>> loggers;
  std::string pattern;
  bool initialised = false;
};

State& state() {
  static State s;
  return s;
}

spdlog::level::level_enum parse_level(const std::string& name) {
  auto level = spdlog::level::from_str(name);
  DGR_CHECK_AS(ConfigError, level != spdlog::level::off || name == "off",
               "unknown log level '{}' (use trace, debug, info, warn, error or off)", name);
  return level;
}

void ensure_default_locked(State& s) {
  if (s.initialised) return;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(spdlog::level::info);
  s.sinks = {console};
  s.pattern = "[%Y-%m-%d %H:%M:%S.%e] [" + rank_tag(0, 1) + "] [%l] [%n] %v";
  s.initialised = true;
}

}  // namespace

std::string rank_tag(int rank, int world_size) {
  int width = 2;
  for (int n = world_size; n >= 100; n /= 10) ++width;
  return fmt::format("r{:0{}d}/{}", rank, width, world_size);
}

void init(const Options& options, int rank, int world_size) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(rank == 0 ? parse_level(options.console_level) : spdlog::level::warn);
  s.sinks = {console};
  if (!options.dir.empty()) {
    std::string tag = rank_tag(rank, world_size);
    std::string path = fmt::format("{}/dgr.{}.log", options.dir, tag.substr(0, tag.find('/')));
    try {
      auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
      file->set_level(parse_level(options.file_level));
      s.sinks.push_back(file);
    } catch (const spdlog::spdlog_ex& e) {
      throw SystemError(fmt::format("cannot open log file {}: {} (is --log-dir writable?)", path, e.what()));
    }
  }
  s.pattern = "[%Y-%m-%d %H:%M:%S.%e] [" + rank_tag(rank, world_size) + "] [%l] [%n] %v";
  s.initialised = true;
  for (auto& [name, logger] : s.loggers) {
    logger->sinks() = s.sinks;
    logger->set_pattern(s.pattern);
  }
}

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  ensure_default_locked(s);
  auto it = s.loggers.find(name);
  if (it != s.loggers.end()) return it->second;
  auto logger = std::make_shared<spdlog::logger>(name, s.sinks.begin(), s.sinks.end());
  logger->set_level(spdlog::level::trace);
  logger->set_pattern(s.pattern);
  logger->flush_on(spdlog::level::warn);
  s.loggers.emplace(name, logger);
  return logger;
}

void flush() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  for (auto& [name, logger] : s.loggers) logger->flush();
}

}  // namespace dgr::log
