// Training progress for people, on rank 0: step/total, epoch, smoothed loss, learning rate, examples/s,
// elapsed time and ETA. On a terminal one bar line redrawn in place; in a log file or pipe a plain
// key=value line every few seconds (and at the first and the last step). No LibTorch here: any training
// loop (stage 1, stage 2) calls Progress::step once per optimizer step. docs/monitoring.md shows the output.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace dgr::trainer {

enum class ProgressStyle { kAuto, kBar, kLines };  // kAuto: a bar when stderr is a terminal, else lines

struct ProgressOptions {
  double every_s = 10;           // lines: seconds between two lines (0 = no progress output at all)
  ProgressStyle style = ProgressStyle::kAuto;
  double loss_smoothing = 0.9;   // EMA factor over steps (0 = the last step's loss), bias-corrected
  double bar_redraw_s = 0.1;     // bar: at most one redraw per this many seconds (the last step always)
};

// One optimizer step, as the loop knows it after the step (the same values on every rank).
struct StepReport {
  int64_t step = 0;         // optimizer steps done, counting this one (1-based)
  int64_t total_steps = 0;  // steps of the whole run
  double epoch = 0;         // fractional epochs done
  double loss = 0;          // this step's loss (mean over the global batch)
  int64_t examples = 0;     // examples in this step over all ranks
  double lr = -1;           // learning rate of this step (< 0: not shown)
};

// What one progress output shows.
struct ProgressSnapshot {
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  double loss = 0;            // smoothed
  double lr = -1;             // < 0: not shown
  double examples_per_s = 0;  // since the Progress started, paused time excluded
  double elapsed_s = 0;       // wall time since the Progress started
  double eta_s = -1;          // remaining steps x wall seconds per step so far (< 0: unknown)
};

// "42s", "3m05s", "2h07m", "3d04h"; "?" for a negative or non-finite duration.
std::string format_duration(double seconds);
// "step=120/1000 (12.0%) epoch=3.20 loss_ema=2.3141 lr=2.00e-03 examples_per_s=410.5 elapsed=1m05s eta=3m12s"
std::string format_progress_line(const ProgressSnapshot& snapshot);
// "step 120/1000 [##----------] 12% | epoch 3.20 | loss 2.3141 | lr 2.00e-03 | 410 ex/s | 1m05s<3m12s",
// at most `columns` characters (the bar graphic shrinks, then goes; the text is cut last).
std::string format_progress_bar(const ProgressSnapshot& snapshot, int columns);

// Where the progress goes. Defaults: `terminal` writes to stderr and flushes, `line` logs at info level
// through the "train" logger (so the line carries the rank tag and reaches the log files too).
struct ProgressOutput {
  std::function<void(const std::string&)> terminal;  // raw text for the terminal (bar: "\r...", "\n")
  std::function<void(const std::string&)> line;      // one complete line, without '\n'
  std::function<int()> columns;                      // terminal width (default: stderr's, else 100)
  std::function<double()> clock_s;                   // monotonic seconds (default: steady_clock)
};

class Progress {
 public:
  // Only `is_root` prints; on other ranks every call returns at once. `start_step`: the step the run
  // starts (or resumes) from; rates count the steps after it. The clocks start here.
  Progress(const ProgressOptions& options, bool is_root, int64_t start_step, ProgressOutput output = {});
  ~Progress();  // ends a bar line that is still drawn
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Once per optimizer step, on every rank (no communication).
  void step(const StepReport& report);
  // Time between pause() and resume() (evaluation) does not count in examples/s; it does count in the
  // ETA, which is meant to say when the run ends.
  void pause();
  void resume();
  // Bar: erases the bar so that a log line can follow on a clean line; the next step draws it again.
  // Call before logging from the training loop. Nothing in lines style.
  void clear();
  // Bar: leaves the last bar on the screen and ends its line. Nothing in lines style.
  void finish();

  bool bar() const { return bar_; }
  bool enabled() const { return enabled_; }
  // The numbers of the last step (valid after the first step()).
  const ProgressSnapshot& snapshot() const { return snapshot_; }

 private:
  ProgressOptions options_;
  ProgressOutput output_;
  bool enabled_ = false;  // rank 0 and every_s > 0
  bool bar_ = false;
  bool bar_drawn_ = false;  // a bar is on the screen (the cursor is at its column 0)
  int64_t start_step_ = 0;
  double start_s_ = 0;
  double paused_at_s_ = -1;  // >= 0 while paused
  double paused_total_s_ = 0;
  double last_output_s_ = -1;  // < 0: nothing printed yet
  double loss_ema_ = 0;
  double loss_weight_ = 0;  // 1 - smoothing^n, the EMA's bias correction
  int64_t examples_ = 0;    // since start_step
  ProgressSnapshot snapshot_;
};

}  // namespace dgr::trainer
