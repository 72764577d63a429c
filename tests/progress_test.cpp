// trainer::Progress: the arithmetic (smoothed loss, examples/s without paused time, ETA from the steps of
// this run), when a line or a bar is printed (a fake clock), the two formats and their widths.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "trainer/progress.h"

namespace dgr::trainer {
namespace {

// A Progress whose clock, terminal and log lines the test controls.
struct Harness {
  double now_s = 0;
  std::vector<std::string> lines;     // [call] of output.line
  std::vector<std::string> terminal;  // [call] of output.terminal
  int columns = 120;

  ProgressOutput output() {
    ProgressOutput o;
    o.terminal = [this](const std::string& text) { terminal.push_back(text); };
    o.line = [this](const std::string& line) { lines.push_back(line); };
    o.columns = [this] { return columns; };
    o.clock_s = [this] { return now_s; };
    return o;
  }
};

ProgressOptions lines_options(double every_s = 10) {
  ProgressOptions o;
  o.every_s = every_s;
  o.style = ProgressStyle::kLines;
  return o;
}

StepReport report(int64_t step, int64_t total, double loss, int64_t examples, double lr = -1) {
  StepReport r;
  r.step = step;
  r.total_steps = total;
  r.epoch = static_cast<double>(step) / 10.0;
  r.loss = loss;
  r.examples = examples;
  r.lr = lr;
  return r;
}

TEST(ProgressFormat, Durations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");  // rounded before it is split into units
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(2 * 3600 + 7 * 60 + 10), "2h07m");
  EXPECT_EQ(format_duration(3 * 86400 + 4 * 3600), "3d04h");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::quiet_NaN()), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
}

TEST(ProgressFormat, LineIsKeyValueAndOmitsAMissingLearningRate) {
  ProgressSnapshot s;
  s.step = 120;
  s.total_steps = 1000;
  s.epoch = 3.2;
  s.loss = 2.31415;
  s.lr = 0.002;
  s.examples_per_s = 410.54;
  s.elapsed_s = 65;
  s.eta_s = 192;
  EXPECT_EQ(format_progress_line(s), "progress step=120/1000 epoch=3.20 loss_ema=2.3142 lr=2.00e-03 "
                                     "examples_per_s=410.5 elapsed=1m05s eta=3m12s");
  s.lr = -1;
  s.eta_s = -1;
  EXPECT_EQ(format_progress_line(s), "progress step=120/1000 epoch=3.20 loss_ema=2.3142 examples_per_s=410.5 "
                                     "elapsed=1m05s eta=?");
}

TEST(ProgressFormat, BarFitsTheTerminalAndFillsWithTheFraction) {
  ProgressSnapshot s;
  s.step = 500;
  s.total_steps = 1000;
  s.epoch = 5;
  s.loss = 1.5;
  s.lr = 1e-3;
  s.examples_per_s = 99.6;
  s.elapsed_s = 30;
  s.eta_s = 30;
  const std::string wide = format_progress_bar(s, 200);
  EXPECT_EQ(wide, "step 500/1000 [###############...............]  50% | epoch 5.00 | loss 1.5000 | lr 1.00e-03 | "
                  "100 ex/s | 30s<30s");
  for (int columns : {120, 100, 90, 80, 60, 30}) {
    SCOPED_TRACE(columns);
    const std::string bar = format_progress_bar(s, columns);
    EXPECT_LE(static_cast<int>(bar.size()), columns - 1);  // never the last column (it would wrap)
    EXPECT_EQ(bar.rfind("step 500/1000", 0), 0u) << bar;
  }
  // The graphic shrinks before it goes; the text is cut last.
  const std::string narrow = format_progress_bar(s, 100);
  EXPECT_NE(narrow.find('['), std::string::npos) << narrow;
  EXPECT_EQ(format_progress_bar(s, 80).find('['), std::string::npos);
  s.step = 1000;
  const std::string done = format_progress_bar(s, 200);
  EXPECT_NE(done.find("[##############################] 100%"), std::string::npos) << done;
}

TEST(Progress, RatesEtaAndSmoothedLossFollowTheClock) {
  Harness h;
  ProgressOptions options = lines_options(10);
  options.loss_smoothing = 0.5;
  Progress p(options, /*is_root=*/true, /*start_step=*/0, h.output());
  EXPECT_FALSE(p.bar());
  h.now_s = 2;
  p.step(report(1, 100, 4.0, 32, 1e-3));
  // 32 examples in 2 s; 99 steps left at 2 s per step; the bias-corrected EMA of one value is that value.
  EXPECT_DOUBLE_EQ(p.snapshot().examples_per_s, 16);
  EXPECT_DOUBLE_EQ(p.snapshot().eta_s, 198);
  EXPECT_DOUBLE_EQ(p.snapshot().loss, 4.0);
  EXPECT_DOUBLE_EQ(p.snapshot().elapsed_s, 2);
  h.now_s = 4;
  p.step(report(2, 100, 2.0, 32, 1e-3));
  // EMA: (0.25 * 4 + 0.5 * 2) / (1 - 0.25) = 2.6667.
  EXPECT_NEAR(p.snapshot().loss, 2.0 / 0.75, 1e-12);
  EXPECT_DOUBLE_EQ(p.snapshot().examples_per_s, 16);
  EXPECT_DOUBLE_EQ(p.snapshot().eta_s, 98 * 2.0);
}

TEST(Progress, PausedTimeIsLeftOutOfExamplesPerSecondButNotOutOfTheEta) {
  Harness h;
  Progress p(lines_options(), true, 0, h.output());
  h.now_s = 1;
  p.step(report(1, 10, 1.0, 10));
  p.pause();  // an evaluation of 4 s
  h.now_s = 5;
  p.resume();
  h.now_s = 6;
  p.step(report(2, 10, 1.0, 10));
  EXPECT_DOUBLE_EQ(p.snapshot().examples_per_s, 20.0 / 2.0);
  EXPECT_DOUBLE_EQ(p.snapshot().eta_s, 8 * 6.0 / 2.0);
  // A second pause() while paused does not restart the pause.
  p.pause();
  h.now_s = 8;
  p.pause();
  h.now_s = 10;
  p.resume();
  h.now_s = 11;
  p.step(report(3, 10, 1.0, 10));
  EXPECT_DOUBLE_EQ(p.snapshot().examples_per_s, 30.0 / (11 - 4 - 4));
}

TEST(Progress, AResumedRunCountsOnlyItsOwnSteps) {
  Harness h;
  Progress p(lines_options(), true, /*start_step=*/50, h.output());
  h.now_s = 3;
  p.step(report(51, 100, 1.0, 8));
  EXPECT_DOUBLE_EQ(p.snapshot().eta_s, 49 * 3.0);
  EXPECT_DOUBLE_EQ(p.snapshot().examples_per_s, 8.0 / 3.0);
}

TEST(Progress, LinesComeAtTheFirstStepEveryIntervalAndAtTheLastStep) {
  Harness h;
  Progress p(lines_options(10), true, 0, h.output());
  std::vector<int64_t> printed;  // steps that made a line
  for (int64_t step = 1; step <= 30; ++step) {
    h.now_s = static_cast<double>(step);  // one step per second
    const size_t before = h.lines.size();
    p.step(report(step, 30, 1.0, 4, 1e-3));
    if (h.lines.size() > before) printed.push_back(step);
  }
  EXPECT_EQ(printed, (std::vector<int64_t>{1, 11, 21, 30}));
  EXPECT_TRUE(h.terminal.empty());
  EXPECT_EQ(h.lines.back().rfind("progress step=30/30 ", 0), 0u) << h.lines.back();
  EXPECT_NE(h.lines.back().find(" eta=0s"), std::string::npos) << h.lines.back();
  p.clear();
  p.finish();
  EXPECT_TRUE(h.terminal.empty());  // nothing to erase or end in lines style
}

TEST(Progress, BarRedrawsInPlaceAtMostEveryRedrawIntervalAndEndsItsLine) {
  Harness h;
  ProgressOptions options = lines_options();
  options.style = ProgressStyle::kBar;
  options.bar_redraw_s = 0.1;
  Progress p(options, true, 0, h.output());
  EXPECT_TRUE(p.bar());
  h.now_s = 0.01;
  p.step(report(1, 4, 2.0, 4));
  ASSERT_EQ(h.terminal.size(), 1u);
  const std::string& first = h.terminal[0];
  EXPECT_EQ(first.rfind("\rstep 1/4 [", 0), 0u) << first;
  EXPECT_EQ(first.substr(first.size() - 4), "\033[K\r");  // the cursor rests at column 0
  h.now_s = 0.05;
  p.step(report(2, 4, 2.0, 4));
  EXPECT_EQ(h.terminal.size(), 1u);  // too soon
  p.clear();
  ASSERT_EQ(h.terminal.size(), 2u);
  EXPECT_EQ(h.terminal[1], "\r\033[K");
  h.now_s = 0.06;
  p.step(report(3, 4, 2.0, 4));
  ASSERT_EQ(h.terminal.size(), 3u);  // erased: drawn again at once
  h.now_s = 0.07;
  p.step(report(4, 4, 2.0, 4));
  ASSERT_EQ(h.terminal.size(), 4u);  // the last step always
  EXPECT_EQ(h.terminal[3].substr(h.terminal[3].size() - 4), "\033[K\n");
  p.finish();
  EXPECT_EQ(h.terminal.size(), 4u);  // the line is already ended
  EXPECT_TRUE(h.lines.empty());
}

TEST(Progress, FinishEndsABarLeftOnTheScreen) {
  Harness h;
  ProgressOptions options = lines_options();
  options.style = ProgressStyle::kBar;
  {
    Progress p(options, true, 0, h.output());
    h.now_s = 1;
    p.step(report(1, 10, 2.0, 4));
  }  // a loop left by an exception or a stop signal
  ASSERT_EQ(h.terminal.size(), 2u);
  EXPECT_EQ(h.terminal[1], "\n");
}

TEST(Progress, OnlyRankZeroPrintsAndZeroIntervalIsOff) {
  for (bool is_root : {false, true}) {
    Harness h;
    ProgressOptions options = lines_options(is_root ? 0 : 10);
    Progress p(options, is_root, 0, h.output());
    EXPECT_FALSE(p.enabled());
    for (int64_t step = 1; step <= 3; ++step) {
      h.now_s = 100.0 * static_cast<double>(step);
      p.step(report(step, 3, 1.0, 1));
    }
    p.finish();
    EXPECT_TRUE(h.lines.empty());
    EXPECT_TRUE(h.terminal.empty());
  }
}

TEST(Progress, BadOptionsAreConfigErrors) {
  Harness h;
  EXPECT_THROW(Progress(lines_options(-1), true, 0, h.output()), ConfigError);
  EXPECT_THROW(Progress(lines_options(std::nan("")), true, 0, h.output()), ConfigError);
  ProgressOptions options = lines_options();
  options.loss_smoothing = 1.0;
  EXPECT_THROW(Progress(options, true, 0, h.output()), ConfigError);
}

}  // namespace
}  // namespace dgr::trainer
