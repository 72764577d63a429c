// Progress (see progress.h): the arithmetic (smoothed loss, examples/s, ETA), the two formats, and when to
// print. Note [Bar on a terminal]: the bar is drawn as "\r" + text + erase-to-end-of-line + "\r", so the
// cursor rests at column 0 of the bar line. A log line printed by anything else then overwrites the bar
// instead of being glued after it, and the next step draws the bar again below it. The training loop calls
// clear() before its own log lines so that no rest of the bar is left behind them. Under mpiexec the ranks'
// stderr is a pipe that Open MPI forwards line by line (a "\r" redraw shows only at the next "\n"), so the
// kAuto style gives plain lines there.
#include "trainer/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "common/error.h"
#include "common/log.h"

namespace dgr::trainer {
namespace {

constexpr int kDefaultColumns = 100;
constexpr int kMaxBarWidth = 30;  // characters inside [ ]
constexpr int kMinBarWidth = 5;   // below this the graphic is left out

ProgressOutput with_defaults(ProgressOutput output) {
  if (!output.terminal) {
    output.terminal = [](const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stderr);
      std::fflush(stderr);
    };
  }
  if (!output.line) output.line = [](const std::string& line) { log::get("train")->info("{}", line); };
  if (!output.columns) {
    output.columns = [] {
      winsize size{};
      if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return static_cast<int>(size.ws_col);
      const char* env = std::getenv("COLUMNS");
      const int columns = env != nullptr ? std::atoi(env) : 0;
      return columns > 0 ? columns : kDefaultColumns;
    };
  }
  if (!output.clock_s) {
    output.clock_s = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
  }
  return output;
}

bool stderr_is_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDERR_FILENO) == 1 && (term == nullptr || std::strcmp(term, "dumb") != 0);
}

std::string format_lr(double lr) { return fmt::format("{:.2e}", lr); }

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

std::string format_progress_line(const ProgressSnapshot& p) {
  std::string line = fmt::format("progress step={}/{} epoch={:.2f} loss_ema={:.4f}", p.step, p.total_steps,
                                 p.epoch, p.loss);
  if (p.lr >= 0) line += " lr=" + format_lr(p.lr);
  line += fmt::format(" examples_per_s={:.1f} elapsed={} eta={}", p.examples_per_s, format_duration(p.elapsed_s),
                      format_duration(p.eta_s));
  return line;
}

std::string format_progress_bar(const ProgressSnapshot& p, int columns) {
  const double fraction =
      p.total_steps > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total_steps), 0.0, 1.0) : 0.0;
  const std::string head = fmt::format("step {}/{}", p.step, p.total_steps);
  std::string tail = fmt::format(" {:3d}% | epoch {:.2f} | loss {:.4f}", static_cast<int>(std::floor(fraction * 100)),
                                 p.epoch, p.loss);
  if (p.lr >= 0) tail += " | lr " + format_lr(p.lr);
  tail += fmt::format(" | {:.0f} ex/s | {}<{}", p.examples_per_s, format_duration(p.elapsed_s),
                      format_duration(p.eta_s));
  // One column is left free: text reaching the last column makes some terminals wrap, and "\r" would then
  // return to the wrapped line instead of the bar's.
  const int room = columns - 1;
  const int text_length = static_cast<int>(head.size() + tail.size());
  const int width = std::min(kMaxBarWidth, room - text_length - 3);  // " [" + graphic + "]"
  if (width >= kMinBarWidth) {
    const int filled = static_cast<int>(std::floor(fraction * width));
    return head + " [" + std::string(static_cast<size_t>(filled), '#') +
           std::string(static_cast<size_t>(width - filled), '.') + "]" + tail;
  }
  std::string text = head + tail;
  if (room > 0 && static_cast<int>(text.size()) > room) text.resize(static_cast<size_t>(room));
  return text;
}

Progress::Progress(const ProgressOptions& options, bool is_root, int64_t start_step, ProgressOutput output)
    : options_(options), start_step_(start_step) {
  DGR_CHECK_AS(ConfigError, std::isfinite(options.every_s) && options.every_s >= 0,
               "progress interval is {} s, expected a number of seconds >= 0 (0 = no progress output)",
               options.every_s);
  DGR_CHECK_AS(ConfigError, options.loss_smoothing >= 0 && options.loss_smoothing < 1,
               "progress loss smoothing is {}, expected 0 <= smoothing < 1", options.loss_smoothing);
  enabled_ = is_root && options.every_s > 0;
  if (!enabled_) return;
  output_ = with_defaults(std::move(output));
  bar_ = options.style == ProgressStyle::kBar || (options.style == ProgressStyle::kAuto && stderr_is_terminal());
  start_s_ = output_.clock_s();
}

Progress::~Progress() { finish(); }

void Progress::step(const StepReport& report) {
  if (!enabled_) return;
  const double now = output_.clock_s();
  examples_ += report.examples;
  const double smoothing = options_.loss_smoothing;
  loss_ema_ = smoothing * loss_ema_ + (1 - smoothing) * report.loss;
  loss_weight_ = smoothing * loss_weight_ + (1 - smoothing);

  const int64_t steps_done = report.step - start_step_;
  const double elapsed_s = now - start_s_;
  const double paused_s = paused_total_s_ + (paused_at_s_ >= 0 ? now - paused_at_s_ : 0);
  const double active_s = elapsed_s - paused_s;
  snapshot_.step = report.step;
  snapshot_.total_steps = report.total_steps;
  snapshot_.epoch = report.epoch;
  snapshot_.loss = loss_weight_ > 0 ? loss_ema_ / loss_weight_ : report.loss;
  snapshot_.lr = report.lr;
  snapshot_.examples_per_s = active_s > 0 ? static_cast<double>(examples_) / active_s : 0;
  snapshot_.elapsed_s = elapsed_s;
  snapshot_.eta_s = steps_done > 0 ? static_cast<double>(std::max<int64_t>(0, report.total_steps - report.step)) *
                                         elapsed_s / static_cast<double>(steps_done)
                                   : -1;

  const bool last = report.step >= report.total_steps;
  if (bar_) {
    if (!last && bar_drawn_ && now - last_output_s_ < options_.bar_redraw_s) return;
    // Note [Bar on a terminal]: the cursor stays at column 0; the last step ends the line.
    std::string text = "\r";  // appended, not "\r" + string: GCC 12 warns falsely (-Wrestrict) on that
    text += format_progress_bar(snapshot_, output_.columns());
    text += last ? "\033[K\n" : "\033[K\r";
    output_.terminal(text);
    bar_drawn_ = !last;
  } else {
    if (!last && last_output_s_ >= 0 && now - last_output_s_ < options_.every_s) return;
    output_.line(format_progress_line(snapshot_));
  }
  last_output_s_ = now;
}

void Progress::pause() {
  if (!enabled_ || paused_at_s_ >= 0) return;
  paused_at_s_ = output_.clock_s();
}

void Progress::resume() {
  if (!enabled_ || paused_at_s_ < 0) return;
  paused_total_s_ += output_.clock_s() - paused_at_s_;
  paused_at_s_ = -1;
}

void Progress::clear() {
  if (!enabled_ || !bar_drawn_) return;
  output_.terminal("\r\033[K");
  bar_drawn_ = false;
}

void Progress::finish() {
  if (!enabled_ || !bar_drawn_) return;
  output_.terminal("\n");  // the cursor is at column 0 of the bar line: keep the bar, go below it
  bar_drawn_ = false;
}

}  // namespace dgr::trainer
