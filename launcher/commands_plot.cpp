// `dgr plot`: training curves of one or more runs, read from their OUT/train.jsonl (loss and learning rate
// of the "train" and "step" events, stage 2's per-step diagnostics of the "step" events: violated pairs,
// gradient norms and shares; every metric of the "eval" events; against the step), drawn into one PNG by
// gnuplot (Debian's gnuplot-nox). Runs on rank 0, no communication. docs/monitoring.md has the details.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "launcher/commands.h"
#include "data/line_reader.h"

extern char** environ;

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct PlotOptions {
  std::vector<std::string> files;    // train.jsonl of each run
  std::string out;                   // the PNG ("" = plot.png next to the first file)
  std::vector<std::string> metrics;  // evaluation metrics to draw (empty = every one found)
  std::string gnuplot = "gnuplot";   // the gnuplot executable, looked up in PATH
  int panel_width = 640;             // pixels per panel
  int panel_height = 400;
};

// y against the step; a later line at the same step replaces an earlier one (a resumed run repeats the
// steps after its last checkpoint).
using Curve = std::map<int64_t, double>;  // [step] -> value

struct RunCurves {
  std::string path;
  std::map<std::string, Curve> losses;                          // [field: loss, loss_*, ...]
  Curve lr;
  std::map<std::string, std::map<std::string, Curve>> metrics;  // [metric][split]
  // Stage 2's per-step diagnostics (Note [Step diagnostics] in trainer/trainer.h): fractions of pairs
  // (viol_head, viol_neg, misordered_neg, head_first), gradient norms (*_grad_norm), shares (*_grad_share).
  std::map<std::string, Curve> pairs, norms, shares;
};

constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";
constexpr size_t kPngSignatureBytes = 8;

int64_t step_of(const nlohmann::json& line, const std::string& event, const std::string& path, size_t number) {
  auto it = line.find("step");
  if (it == line.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
    data::throw_data_error(path, number, fmt::format("event '{}' has no \"step\" field with an integer >= 0, "
                                                         "found {}", event, it == line.end() ? "none" : it->dump()));
  }
  return it->get<int64_t>();
}

// Reads a train.jsonl strictly: every non-blank line must be a JSON object with an "event" string.
// Events other than train/step/eval are skipped (later dgr versions may add some).
RunCurves read_train_jsonl(const std::string& path) {
  RunCurves run;
  run.path = path;
  data::LineReader reader(path);
  std::string text;
  while (reader.next(text)) {
    const size_t number = reader.line_number();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json line;
    try {
      line = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      data::throw_data_error(path, number, fmt::format("not valid JSON (error at byte {} of the line), expected "
                                                           "one JSON object per line as `dgr train` writes them (a "
                                                           "line cut off when a job was killed? delete it)", e.byte));
    }
    if (!line.is_object()) {
      data::throw_data_error(path, number, fmt::format("found a JSON {}, expected an object with an \"event\" field",
                                                           line.type_name()));
    }
    auto event_it = line.find("event");
    if (event_it == line.end() || !event_it->is_string()) {
      data::throw_data_error(path, number, "no \"event\" string, expected a line of OUT/train.jsonl of `dgr train` "
                                               "(events \"train\" and \"eval\"; is this another JSONL file?)");
    }
    const std::string event = event_it->get<std::string>();
    if (event == "train" || event == "step") {
      const int64_t step = step_of(line, event, path, number);
      for (const auto& [key, value] : line.items()) {
        if (!value.is_number()) continue;  // NaN is written as null: no point
        const double v = value.get<double>();
        if (key == "lr") run.lr[step] = v;
        if (key.find("loss") != std::string::npos) run.losses[key][step] = v;
        if (event != "step") continue;
        if (key.starts_with("viol_") || key.starts_with("misordered_") || key == "head_first") run.pairs[key][step] = v;
        if (key.ends_with("_grad_norm") || key == "grad_norm") run.norms[key][step] = v;
        if (key.ends_with("_grad_share")) run.shares[key][step] = v;
      }
    } else if (event == "eval") {
      const int64_t step = step_of(line, event, path, number);
      auto split = line.find("split");
      auto metrics = line.find("metrics");
      if (split == line.end() || !split->is_string() || metrics == line.end() || !metrics->is_object()) {
        data::throw_data_error(path, number, "event 'eval' needs a \"split\" string and a \"metrics\" object");
      }
      for (const auto& [name, value] : metrics->items()) {
        if (!value.is_number()) continue;
        run.metrics[name][split->get<std::string>()][step] = value.get<double>();
      }
    }
  }
  return run;
}

// Panel order of the metrics: recall, MRR, nDCG, then any other family by name; within a family by the
// cutoff (R@1, R@5, R@10, R@20, R@100), not by the JSON object's alphabetical order.
bool metric_before(const std::string& a, const std::string& b) {
  auto key = [](const std::string& name) {
    const size_t at = name.find('@');
    const std::string family = name.substr(0, at);
    const int family_rank = family == "R" ? 0 : family == "MRR" ? 1 : family == "nDCG" ? 2 : 3;
    const long cutoff = at == std::string::npos ? 0 : std::strtol(name.c_str() + at + 1, nullptr, 10);
    return std::make_tuple(family_rank, family, cutoff, name);
  };
  return key(a) < key(b);
}

// Run labels in the legend: the run directory's name (runs/x/train.jsonl -> "x"), the path when two runs
// share that name, nothing with a single run.
std::vector<std::string> run_labels(const std::vector<RunCurves>& runs) {
  std::vector<std::string> labels;
  if (runs.size() == 1) return {""};
  for (const auto& run : runs) {
    std::string name = fs::path(run.path).parent_path().filename().string();
    labels.push_back(name.empty() ? run.path : name);
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (std::count(labels.begin(), labels.end(), labels[i]) > 1) labels[i] = runs[i].path;
  }
  return labels;
}

// A string for a single-quoted gnuplot string ('' is a quote), without control characters.
std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "''";
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;
    }
  }
  return out + "'";
}

struct Series {
  std::string title;
  const Curve* curve;
};

struct Panel {
  std::string title;
  std::string y_format;  // gnuplot format of the y tics
  std::string y_range;   // gnuplot range: "[*:*]" (autoscale), "[0:*]" (from 0: rates, metrics)
  std::vector<Series> series;
};

std::string with_label(const std::string& label, const std::string& name) {
  return label.empty() ? name : label + " " + name;
}

std::vector<Panel> make_panels(const std::vector<RunCurves>& runs, const std::vector<std::string>& wanted_metrics) {
  const std::vector<std::string> labels = run_labels(runs);
  std::vector<Panel> panels;
  Panel loss{"training loss", "%g", "[*:*]", {}};
  Panel lr{"learning rate", "%.1e", "[0:*]", {}};
  for (size_t r = 0; r < runs.size(); ++r) {
    for (const auto& [field, curve] : runs[r].losses) loss.series.push_back({with_label(labels[r], field), &curve});
    if (!runs[r].lr.empty()) lr.series.push_back({with_label(labels[r], "lr"), &runs[r].lr});
  }
  if (!loss.series.empty()) panels.push_back(std::move(loss));
  if (!lr.series.empty()) panels.push_back(std::move(lr));
  Panel pairs{"pairs per step (fraction)", "%g", "[0:1]", {}};
  Panel norms{"gradient norm per step (before clipping)", "%g", "[0:*]", {}};
  Panel shares{"share of the gradient norm", "%g", "[0:1]", {}};
  for (size_t r = 0; r < runs.size(); ++r) {
    for (const auto& [field, curve] : runs[r].pairs) pairs.series.push_back({with_label(labels[r], field), &curve});
    for (const auto& [field, curve] : runs[r].norms) norms.series.push_back({with_label(labels[r], field), &curve});
    for (const auto& [field, curve] : runs[r].shares) shares.series.push_back({with_label(labels[r], field), &curve});
  }
  for (Panel* panel : {&pairs, &norms, &shares}) {
    if (!panel->series.empty()) panels.push_back(std::move(*panel));
  }

  std::vector<std::string> found;  // every metric of every run, in panel order
  for (const auto& run : runs) {
    for (const auto& [name, splits] : run.metrics) {
      if (std::find(found.begin(), found.end(), name) == found.end()) found.push_back(name);
    }
  }
  std::sort(found.begin(), found.end(), metric_before);
  for (const auto& name : wanted_metrics) {
    std::vector<std::string> paths;
    for (const auto& run : runs) paths.push_back(run.path);
    DGR_CHECK_AS(ConfigError, std::find(found.begin(), found.end(), name) != found.end(),
                 "--metrics {}: no eval event of {} has this metric (found: {}; names are case-sensitive)", name,
                 fmt::join(paths, ", "),
                 found.empty() ? std::string("none, no eval events") : fmt::format("{}", fmt::join(found, ", ")));
  }
  for (const auto& name : wanted_metrics.empty() ? found : wanted_metrics) {
    Panel panel{name + " (evaluation)", "%g", "[0:*]", {}};
    for (size_t r = 0; r < runs.size(); ++r) {
      auto it = runs[r].metrics.find(name);
      if (it == runs[r].metrics.end()) continue;
      for (const auto& [split, curve] : it->second) panel.series.push_back({with_label(labels[r], split), &curve});
    }
    panels.push_back(std::move(panel));
  }
  return panels;
}

// A temporary directory for the data files and the script, removed unless keep() was called.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "dgr_plot.XXXXXX").string();
    DGR_CHECK_AS(SystemError, ::mkdtemp(pattern.data()) != nullptr, "cannot create a temporary directory {}: {} "
                 "(set TMPDIR to a writable directory)", pattern, std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!keep_) fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  fs::path path_;
  bool keep_ = false;
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  DGR_CHECK_AS(SystemError, out.good(), "cannot write {} (disk full?)", path.string());
}

// The gnuplot script drawing every panel into `png`, one data file per series next to it.
std::string write_script(const std::vector<Panel>& panels, const std::string& title, const PlotOptions& opts,
                         const fs::path& dir, const fs::path& png) {
  const int columns = panels.size() <= 2 ? static_cast<int>(panels.size()) : panels.size() <= 4 ? 2 : 3;
  const int rows = static_cast<int>((panels.size() + static_cast<size_t>(columns) - 1) / static_cast<size_t>(columns));
  const int width = columns * opts.panel_width, height = rows * opts.panel_height;
  std::string script = fmt::format(
      "# written by dgr plot\n"
      "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {{\n"
      "  set terminal pngcairo noenhanced size {0},{1} font 'sans,10'\n"
      "}} else {{\n"
      "  set terminal png noenhanced size {0},{1}\n"
      "}}\n"
      "set output {2}\n"
      "set multiplot layout {3},{4} title {5}\n"
      "set grid\n"
      "set key top right\n"
      "set xlabel 'step'\n",
      width, height, gnuplot_quote(png.string()), rows, columns, gnuplot_quote(title));
  size_t file_index = 0;
  for (const auto& panel : panels) {
    script += fmt::format("set title {}\nset format y {}\nset yrange {}\nplot ", gnuplot_quote(panel.title),
                          gnuplot_quote(panel.y_format), panel.y_range);
    for (size_t s = 0; s < panel.series.size(); ++s) {
      const Series& series = panel.series[s];
      const fs::path data = dir / fmt::format("series{}.dat", file_index++);
      std::string rows_text;
      for (const auto& [step, value] : *series.curve) rows_text += fmt::format("{} {}\n", step, value);
      write_text(data, rows_text);
      // Sparse curves (evaluations, short runs) get markers: a line through one point is invisible.
      const char* style = series.curve->size() < 60 ? "linespoints pt 7 ps 0.6" : "lines";
      script += fmt::format("{}{} using 1:2 with {} lw 1.5 title {}", s > 0 ? ", \\\n     " : "",
                            gnuplot_quote(data.string()), style, gnuplot_quote(series.title));
    }
    script += "\n";
  }
  script += "unset multiplot\nset output\n";
  return script;
}

// Runs `gnuplot SCRIPT` with its output in LOG; returns its exit status. Throws when it cannot start.
int run_gnuplot(const std::string& gnuplot, const fs::path& script, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv = {const_cast<char*>(gnuplot.c_str()), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, gnuplot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT) {
    throw SystemError(fmt::format("cannot run '{}': not found{}; dgr plot draws with gnuplot: install it with "
                                  "`apt-get install gnuplot-nox` (Debian), or give its path with --gnuplot", gnuplot,
                                  gnuplot.find('/') == std::string::npos ? " in PATH" : ""));
  }
  DGR_CHECK_AS(SystemError, rc == 0, "cannot run '{}': {} (check --gnuplot)", gnuplot, std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    DGR_CHECK_AS(SystemError, errno == EINTR, "waiting for gnuplot failed: {}", std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string last_lines(const std::string& text, size_t count) {
  size_t pos = text.size();
  while (pos > 0 && (text[pos - 1] == '\n' || text[pos - 1] == ' ')) --pos;
  const size_t end = pos;
  for (size_t n = 0; n < count && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
  }
  std::string tail = text.substr(pos, end - pos);
  std::replace(tail.begin(), tail.end(), '\n', ' ');
  return tail;
}

int run_plot(const PlotOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.files.empty(), "dgr plot needs at least one train.jsonl (e.g. dgr plot runs/x/train.jsonl)");
  DGR_CHECK_AS(ConfigError, opts.panel_width >= 100 && opts.panel_height >= 100,
               "--panel-width {} --panel-height {}: each must be at least 100 pixels", opts.panel_width,
               opts.panel_height);
  if (!world.is_root()) return 0;
  std::vector<RunCurves> runs;
  for (const auto& path : opts.files) runs.push_back(read_train_jsonl(path));
  const std::vector<Panel> panels = make_panels(runs, opts.metrics);
  const std::string files_text = fmt::format("{}", fmt::join(opts.files, ", "));
  if (panels.empty()) {
    throw DataError(fmt::format("{}: no data points: no \"train\" event with a loss or learning rate and no \"eval\" "
                                "event with a metric (has the run logged its first steps yet?)", files_text));
  }
  const std::string out = !opts.out.empty() ? opts.out
                                            : (fs::path(opts.files.front()).parent_path() / "plot.png").string();

  TempDir dir;
  const fs::path png = dir.path() / "plot.png";
  const fs::path script_path = dir.path() / "plot.gp";
  const fs::path log_path = dir.path() / "gnuplot.log";
  write_text(script_path, write_script(panels, files_text, opts, dir.path(), png));
  const int status = run_gnuplot(opts.gnuplot, script_path, log_path);
  std::string gnuplot_output = "it printed nothing";
  if (fs::exists(log_path) && fs::file_size(log_path) > 0) gnuplot_output = last_lines(files::read_all(log_path.string()), 3);
  if (status != 0) {
    dir.keep();
    throw SystemError(fmt::format("gnuplot failed (exit code {}) on {}: {} (its data files are kept in {})", status,
                                  script_path.string(), gnuplot_output, dir.path().string()));
  }
  const std::string bytes = fs::exists(png) ? files::read_all(png.string()) : std::string();
  if (bytes.size() <= kPngSignatureBytes || bytes.compare(0, kPngSignatureBytes, kPngSignature, kPngSignatureBytes) != 0) {
    dir.keep();
    throw SystemError(fmt::format("gnuplot ran {} without error but wrote no PNG ({}): does this gnuplot have the "
                                  "pngcairo or png terminal? (`gnuplot -e 'set terminal'`)", script_path.string(),
                                  gnuplot_output));
  }
  const fs::path out_dir = fs::path(out).parent_path();
  if (!out_dir.empty()) fs::create_directories(out_dir);
  files::AtomicFile file(out);
  file.write(bytes);
  file.commit();
  std::vector<std::string> titles;
  for (const auto& panel : panels) titles.push_back(panel.title);
  std::cout << fmt::format("dgr plot: wrote {} ({} panels: {}; from {})\n", out, panels.size(), fmt::join(titles, ", "),
                           files_text)
            << std::flush;
  return 0;
}

}  // namespace

void add_plot_commands(CLI::App& app, CommandTable& table) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* plot = app.add_subcommand("plot", "Draw training curves of runs (loss, learning rate and evaluation "
                                              "metrics against the step, from OUT/train.jsonl) into a PNG with gnuplot");
  plot->add_option("files", o->files, "train.jsonl files of `dgr train` runs (one set of curves per file)")->required();
  plot->add_option("--out", o->out, "PNG to write ('' = plot.png next to the first file)");
  plot->add_option("--metrics", o->metrics, "Evaluation metrics to draw, e.g. R@10,MRR@10 (default: every one found)")
      ->delimiter(',');
  plot->add_option("--gnuplot", o->gnuplot, "The gnuplot executable (Debian package gnuplot-nox)");
  plot->add_option("--panel-width", o->panel_width, "Width of each panel in pixels");
  plot->add_option("--panel-height", o->panel_height, "Height of each panel in pixels");
  table[plot] = [o](const World& world) { return run_plot(*o, world); };
}

}  // namespace dgr::launcher
