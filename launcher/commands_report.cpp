// `dgr report`: one table of several systems' runs on several splits (and the splits pooled), with several
// runs (seeds) of a system as a mean and its 95% confidence interval, and paired significance tests between
// named systems marked in the cells (../shared/docs/method.md section 11; retrieval/significance.h).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "data/readers.h"
#include "data/trec.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "retrieval/metrics.h"
#include "retrieval/significance.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct ReportOptions {
  std::string data_dir = "data/debian-tiny";
  std::vector<std::string> systems;  // NAME=RUN, RUN may contain {split}; a NAME given again adds a seed
  std::vector<std::string> splits = {"dev", "test"};
  std::string out;                   // also write the table here (markdown)
  std::vector<std::string> compare;  // "B:A": test system B against system A
  std::string baseline;              // test every other system against this one
  std::string test = "randomization";  // the test whose result marks the cells: randomization | t
  double alpha = 0.05;
  int rounds = 10000;                // sign flips of the randomization test
  bool p_values = false;             // also list every test: mean difference, both p-values, the verdict
};

const std::vector<std::string> kColumns = {"R@1", "R@5", "R@10", "R@20", "MRR@10"};
const std::vector<std::string> kMarks = {"†", "‡", "§", "¶", "#", "%", "&", "@"};

struct System {
  std::string name;
  std::vector<std::string> runs;  // [seed] run path pattern, may contain {split}
};

// [system][row][seed]; rows are the splits, then (with several splits) the splits pooled.
using Evaluations = std::vector<std::vector<std::vector<retrieval::Evaluation>>>;

struct Comparison {
  size_t system = 0;     // B, the system whose cells carry the mark
  size_t against = 0;    // A
  std::string mark;
};

std::string run_path(std::string pattern, const std::string& split) {
  for (size_t at; (at = pattern.find("{split}")) != std::string::npos;) pattern.replace(at, 7, split);
  return pattern;
}

// Per system, how its runs were retrieved: the "description" of the RUN.json that `dgr retrieve` writes beside
// each RUN.trec (distinct ones joined), so that a table names the keys each system used. Runs without one
// (BM25, other tools) are not listed.
std::string retrieval_settings(const ReportOptions& opts, const std::vector<System>& systems) {
  std::string text;
  for (const auto& system : systems) {
    std::vector<std::string> seen;
    for (const auto& pattern : system.runs) {
      for (const auto& split : opts.splits) {
        const fs::path sidecar = fs::path(run_path(pattern, split)).replace_extension(".json");
        if (!fs::exists(sidecar)) continue;
        std::string description;
        try {
          description = nlohmann::json::parse(files::read_all(sidecar.string())).value("description", "");
        } catch (const nlohmann::json::exception& e) {
          throw DataError(fmt::format("{}: not JSON ({}): run `dgr retrieve` again to rewrite it, or remove it",
                                      sidecar.string(), e.what()));
        }
        if (!description.empty() && std::find(seen.begin(), seen.end(), description) == seen.end())
          seen.push_back(description);
      }
    }
    if (seen.empty()) continue;
    std::string joined;
    for (const auto& d : seen) joined += (joined.empty() ? "" : " | ") + d;
    text += fmt::format("- {}: {}\n", system.name, joined);
  }
  return text.empty() ? text : "\nretrieval (from the RUN.json beside each run):\n" + text;
}

std::vector<System> parse_systems(const std::vector<std::string>& specs) {
  std::vector<System> systems;
  for (const auto& spec : specs) {
    const size_t eq = spec.find('=');
    DGR_CHECK_AS(ConfigError, eq != std::string::npos && eq > 0 && eq + 1 < spec.size(),
                 "--system '{}': expected NAME=RUN (RUN may contain {{split}}), e.g. BM25=data/bm25.{{split}}.trec", spec);
    const std::string name = spec.substr(0, eq);
    auto it = std::find_if(systems.begin(), systems.end(), [&](const System& s) { return s.name == name; });
    if (it == systems.end()) it = systems.insert(systems.end(), System{name, {}});
    it->runs.push_back(spec.substr(eq + 1));
  }
  return systems;
}

size_t system_index(const std::vector<System>& systems, const std::string& name, const std::string& flag) {
  for (size_t i = 0; i < systems.size(); ++i) {
    if (systems[i].name == name) return i;
  }
  std::string known;
  for (const auto& s : systems) known += (known.empty() ? "'" : ", '") + s.name + "'";
  throw ConfigError(fmt::format("{}: no system named '{}' (the --system names are {})", flag, name, known));
}

// --compare B:A in the order given, then --baseline A's pairs (B in row order); a pair named twice counts once.
std::vector<Comparison> parse_comparisons(const ReportOptions& opts, const std::vector<System>& systems) {
  std::vector<std::pair<size_t, size_t>> pairs;  // [comparison] (B, A)
  for (const auto& spec : opts.compare) {
    const size_t colon = spec.rfind(':');
    DGR_CHECK_AS(ConfigError, colon != std::string::npos && colon > 0 && colon + 1 < spec.size(),
                 "--compare '{}': expected B:A (test system B against system A), e.g. 'DGR:stage 1'", spec);
    pairs.emplace_back(system_index(systems, spec.substr(0, colon), "--compare " + spec),
                       system_index(systems, spec.substr(colon + 1), "--compare " + spec));
  }
  if (!opts.baseline.empty()) {
    const size_t a = system_index(systems, opts.baseline, "--baseline");
    for (size_t b = 0; b < systems.size(); ++b) {
      if (b != a) pairs.emplace_back(b, a);
    }
  }
  std::vector<Comparison> out;
  for (const auto& [b, a] : pairs) {
    DGR_CHECK_AS(ConfigError, a != b, "--compare: '{}' against itself", systems[a].name);
    const bool seen = std::any_of(out.begin(), out.end(),
                                  [&](const Comparison& c) { return c.system == b && c.against == a; });
    if (seen) continue;
    const size_t k = out.size();
    out.push_back({b, a, k < kMarks.size() ? kMarks[k] : fmt::format("[{}]", k + 1)});
  }
  return out;
}

Evaluations evaluate_systems(const ReportOptions& opts, const std::vector<System>& systems) {
  const fs::path data(opts.data_dir);
  auto corpus = data::read_corpus((data / "corpus.tsv").string());
  std::vector<std::vector<data::Qrel>> qrels;  // [split]
  std::vector<data::Qrel> pooled_qrels;
  for (const auto& split : opts.splits) {
    auto queries = data::read_queries((data / ("queries." + split + ".tsv")).string());
    qrels.push_back(data::read_qrels((data / ("qrels." + split + ".tsv")).string(), &corpus, &queries));
    pooled_qrels.insert(pooled_qrels.end(), qrels.back().begin(), qrels.back().end());
  }
  const size_t num_rows = opts.splits.size() + (opts.splits.size() > 1 ? 1 : 0);
  const retrieval::MetricsOptions metrics;
  Evaluations out(systems.size(), std::vector<std::vector<retrieval::Evaluation>>(num_rows));
  for (size_t i = 0; i < systems.size(); ++i) {
    for (const auto& pattern : systems[i].runs) {
      std::vector<data::RunEntry> pooled_run;
      for (size_t s = 0; s < opts.splits.size(); ++s) {
        const std::string path = run_path(pattern, opts.splits[s]);
        auto run = data::read_trec_run(path, &corpus, nullptr);
        out[i][s].push_back(retrieval::evaluate(run, qrels[s], metrics));
        pooled_run.insert(pooled_run.end(), run.begin(), run.end());
      }
      if (num_rows > opts.splits.size()) out[i].back().push_back(retrieval::evaluate(pooled_run, pooled_qrels, metrics));
    }
  }
  return out;
}

// One metric per evaluated query (qid order), averaged over the seeds: the input of the paired tests.
std::vector<double> per_query_means(const std::vector<retrieval::Evaluation>& seeds, const std::string& metric) {
  std::vector<double> out;  // [query]
  for (const auto& [qid, values] : seeds.front().per_query) {
    double sum = 0;
    for (const auto& e : seeds) sum += e.per_query.at(qid).at(metric);
    out.push_back(sum / seeds.size());
  }
  return out;
}

// The table's rows: the splits, then (with several) the splits pooled, named "dev+test".
std::vector<std::string> row_names(const ReportOptions& opts) {
  std::vector<std::string> names = opts.splits;
  if (opts.splits.size() > 1) {
    std::string pooled_name;
    for (const auto& split : opts.splits) pooled_name += (pooled_name.empty() ? "" : "+") + split;
    names.push_back(pooled_name);
  }
  return names;
}

// marks[system][row][column]: the marks of the comparisons found significant after Holm over all K tests.
using Marks = std::vector<std::vector<std::vector<std::string>>>;

struct Tested {
  Marks marks;
  size_t num_tests = 0;  // K
  std::string p_table;   // with --p-values: one line per test
};

Tested test_comparisons(const ReportOptions& opts, const std::vector<System>& systems, const Evaluations& evals,
                        const std::vector<Comparison>& comparisons) {
  struct Cell { size_t comparison, row, column; retrieval::PairedTest test; };
  std::vector<Cell> cells;  // [test]
  std::vector<double> p;    // [test]
  retrieval::RandomizationOptions randomization;
  randomization.rounds = opts.rounds;
  for (size_t c = 0; c < comparisons.size(); ++c) {
    const auto& b = evals[comparisons[c].system];
    const auto& a = evals[comparisons[c].against];
    for (size_t row = 0; row < b.size(); ++row) {
      DGR_CHECK(b[row].front().per_query.size() == a[row].front().per_query.size(),
                "{} and {}: different evaluated queries", systems[comparisons[c].system].name,
                systems[comparisons[c].against].name);
      for (size_t col = 0; col < kColumns.size(); ++col) {
        const auto test = retrieval::paired_tests(per_query_means(a[row], kColumns[col]),
                                                  per_query_means(b[row], kColumns[col]), randomization);
        p.push_back(opts.test == "t" ? test.t_test_p : test.randomization_p);
        cells.push_back({c, row, col, test});
      }
    }
  }
  const auto reject = retrieval::holm_reject(p, opts.alpha);
  Tested out;
  out.num_tests = p.size();
  out.marks.assign(systems.size(), std::vector<std::vector<std::string>>(evals.front().size(),
                                                                         std::vector<std::string>(kColumns.size())));
  if (opts.p_values) {
    out.p_table = "\n| comparison | split | metric | queries | mean difference | t-test p | randomization p | "
                  "significant (Holm) |\n|---|---|---|---:|---:|---:|---:|---|\n";
  }
  const auto rows = row_names(opts);
  for (size_t k = 0; k < cells.size(); ++k) {
    const Comparison& c = comparisons[cells[k].comparison];
    if (reject[k]) out.marks[c.system][cells[k].row][cells[k].column] += c.mark;
    if (!opts.p_values) continue;
    const auto& t = cells[k].test;
    out.p_table += fmt::format("| {} {} against {} | {} | {} | {} | {:+.4f} | {:.4g} | {:.4g} | {} |\n", c.mark,
                               systems[c.system].name, systems[c.against].name, rows[cells[k].row],
                               kColumns[cells[k].column], t.num_queries, t.mean_difference, t.t_test_p,
                               t.randomization_p, reject[k] ? "yes" : "no");
  }
  return out;
}

std::string legend(const ReportOptions& opts, const std::vector<System>& systems,
                   const std::vector<Comparison>& comparisons, size_t num_tests, bool several_seeds) {
  std::string text;
  if (!comparisons.empty()) {
    std::string pairs;
    for (const auto& c : comparisons) {
      pairs += fmt::format("{}{} {} against {}", pairs.empty() ? "" : ", ", c.mark, systems[c.system].name,
                           systems[c.against].name);
    }
    const std::string test = opts.test == "t" ? "two-sided paired t-test"
                                              : fmt::format("two-sided paired randomization test ({} sign flips, "
                                                            "fixed seed)", opts.rounds);
    text += fmt::format("\n{}: the marked system differs significantly from the other on that split and metric "
                        "({}, alpha {}, Holm-Bonferroni over the K = {} tests of this table; queries without a "
                        "relevant passage left out, ties count as zero differences{}).\n",
                        pairs, test, opts.alpha, num_tests,
                        several_seeds ? "; each query's metric averaged over a system's seeds first" : "");
  }
  if (several_seeds) {
    std::string seeds;
    for (const auto& s : systems) seeds += fmt::format("{}{} {}", seeds.empty() ? "" : ", ", s.name, s.runs.size());
    text += fmt::format("\nmean over seeds ± half-width of its 95% confidence interval (Student's t, S - 1 "
                        "degrees of freedom); seeds S: {}.\n", seeds);
  }
  return text;
}

std::string format_table(const ReportOptions& opts, const std::vector<System>& systems, const Evaluations& evals,
                         const Marks& marks, bool several_seeds) {
  std::string table = "| system | split | queries |";
  for (const auto& c : kColumns) table += " " + c + " |";
  table += "\n|---|---|---:|";
  for (size_t c = 0; c < kColumns.size(); ++c) table += "---:|";
  table += "\n";
  const auto rows = row_names(opts);
  for (size_t i = 0; i < systems.size(); ++i) {
    for (size_t row = 0; row < rows.size(); ++row) {
      const auto& seeds = evals[i][row];
      table += fmt::format("| {} | {} | {} |", systems[i].name, rows[row], seeds.front().num_queries);
      for (size_t col = 0; col < kColumns.size(); ++col) {
        std::vector<double> values;  // [seed]
        for (const auto& e : seeds) values.push_back(e.mean.at(kColumns[col]));
        const auto ci = retrieval::mean_with_ci95(values);
        table += fmt::format(" {:.3f}", ci.mean);
        if (several_seeds && seeds.size() > 1) table += fmt::format(" ± {:.3f}", ci.half_width);
        table += marks[i][row][col] + " |";
      }
      table += "\n";
    }
  }
  return table;
}

// One row per (system, split), and per system the splits pooled (each split has few queries here).
int run_report(const ReportOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.systems.empty(), "dgr report needs at least one --system NAME=RUN");
  const auto systems = parse_systems(opts.systems);
  const auto comparisons = parse_comparisons(opts, systems);
  if (!world.is_root()) return 0;
  const auto evals = evaluate_systems(opts, systems);
  const bool several_seeds =
      std::any_of(systems.begin(), systems.end(), [](const System& s) { return s.runs.size() > 1; });
  const Tested tested = test_comparisons(opts, systems, evals, comparisons);
  const std::string text = format_table(opts, systems, evals, tested.marks, several_seeds) +
                           legend(opts, systems, comparisons, tested.num_tests, several_seeds) +
                           retrieval_settings(opts, systems) + tested.p_table;
  std::cout << text << std::flush;
  if (!opts.out.empty()) {
    files::AtomicFile file(opts.out);
    file.write(text);
    file.commit();
  }
  return 0;
}

}  // namespace

void add_report_command(CLI::App& app, CommandTable& table) {
  auto report = std::make_shared<ReportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "report", "A table of several systems' runs on several splits (and the splits pooled): R@1/5/10/20, MRR@10; "
                "seeds as mean and 95% CI, paired significance tests between named systems");
  cmd->add_option("--data", report->data_dir, "Data set directory (corpus.tsv, queries/qrels.SPLIT.tsv)");
  cmd->add_option("--system", report->systems,
                  "NAME=RUN, where RUN may contain {split}; repeatable, in row order; the same NAME again adds "
                  "a seed of that system (cells then show the mean over seeds ± the half-width of its 95% CI)");
  cmd->add_option("--split", report->splits, "Splits; repeatable");
  cmd->add_option("--out", report->out, "Also write the table, marks and legend (markdown) to this file");
  cmd->add_option("--compare", report->compare,
                  "B:A: test system B against system A on every split and metric, over the same queries (per-query "
                  "metrics averaged over seeds first); B's cells get this comparison's mark (†, ‡, § ... in the "
                  "order given) where the difference is significant after Holm over all the table's tests; "
                  "repeatable");
  cmd->add_option("--baseline", report->baseline,
                  "NAME: compare every other system against NAME (as --compare OTHER:NAME for each)");
  cmd->add_option("--test", report->test, "The paired test that marks the cells: randomization (sign flips) or t")
      ->check(CLI::IsMember({"randomization", "t"}));
  cmd->add_option("--alpha", report->alpha, "Family-wise significance level of the table (Holm)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--p-values", report->p_values,
               "Also list every test under the legend: mean difference (B minus A), t-test p, randomization p "
               "(both unadjusted) and whether Holm rejects it");
  cmd->add_option("--rounds", report->rounds, "Sign flips R of the randomization test (at least 10,000: method.md section 11)")->check(at_least(10000));
  table[cmd] = [report](const World& world) { return run_report(*report, world); };
}

}  // namespace dgr::launcher
