// Retrieval metrics (see Note [Metric conventions] in metrics.h).
#include "retrieval/metrics.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

namespace dgr::retrieval {

void order_as_trec_eval(std::vector<const data::RunEntry*>& entries) {
  std::stable_sort(entries.begin(), entries.end(), [](const data::RunEntry* a, const data::RunEntry* b) {
    const float score_a = static_cast<float>(a->score), score_b = static_cast<float>(b->score);
    if (score_a != score_b) return score_a > score_b;
    return a->pid.compare(b->pid) > 0;  // char_traits<char> compares bytes as unsigned, as strcmp
  });
}

Evaluation evaluate(const std::vector<data::RunEntry>& run, const std::vector<data::Qrel>& qrels,
                    const MetricsOptions& options) {
  std::unordered_map<std::string, std::unordered_map<std::string, int>> grades;  // qid -> pid -> grade
  for (const auto& q : qrels) {
    if (q.grade > 0) grades[q.qid][q.pid] = q.grade;
  }
  std::unordered_map<std::string, std::vector<const data::RunEntry*>> by_query;
  for (const auto& e : run) by_query[e.qid].push_back(&e);

  Evaluation out;
  for (const auto& name : metric_names(options)) out.mean[name] = 0;
  for (const auto& [qid, entries] : by_query) {
    if (grades.find(qid) == grades.end()) ++out.queries_without_relevant;
  }

  for (const auto& [qid, relevant] : grades) {
    std::vector<std::string> ranking;  // [rank - 1] pid
    auto it = by_query.find(qid);
    if (it == by_query.end()) {
      ++out.queries_missing_from_run;
    } else {
      std::vector<const data::RunEntry*> entries = it->second;
      order_as_trec_eval(entries);
      std::set<std::string> seen;
      for (const auto* e : entries) {
        if (seen.insert(e->pid).second) ranking.push_back(e->pid);
      }
    }
    auto grade_at = [&](size_t i) {
      auto g = relevant.find(ranking[i]);
      return g == relevant.end() ? 0 : g->second;
    };
    std::map<std::string, double> values;
    for (int k : options.recall_at) {
      int found = 0;
      for (size_t i = 0; i < ranking.size() && static_cast<int>(i) < k; ++i) found += grade_at(i) > 0;
      values[fmt::format("R@{}", k)] = static_cast<double>(found) / relevant.size();
    }
    double rr = 0;
    for (size_t i = 0; i < ranking.size() && static_cast<int>(i) < options.mrr_at; ++i) {
      if (grade_at(i) > 0) { rr = 1.0 / (i + 1); break; }
    }
    values[fmt::format("MRR@{}", options.mrr_at)] = rr;
    double dcg = 0, ideal = 0;
    for (size_t i = 0; i < ranking.size() && static_cast<int>(i) < options.ndcg_at; ++i) {
      dcg += (std::pow(2.0, grade_at(i)) - 1) / std::log2(i + 2.0);
    }
    std::vector<int> sorted_grades;
    for (const auto& [pid, g] : relevant) sorted_grades.push_back(g);
    std::sort(sorted_grades.rbegin(), sorted_grades.rend());
    for (size_t i = 0; i < sorted_grades.size() && static_cast<int>(i) < options.ndcg_at; ++i) {
      ideal += (std::pow(2.0, sorted_grades[i]) - 1) / std::log2(i + 2.0);
    }
    values[fmt::format("nDCG@{}", options.ndcg_at)] = ideal > 0 ? dcg / ideal : 0;
    for (const auto& [name, v] : values) out.mean[name] += v;
    out.per_query[qid] = std::move(values);
    ++out.num_queries;
  }
  if (out.num_queries > 0) {
    for (auto& [name, v] : out.mean) v /= out.num_queries;
  }
  return out;
}

std::vector<std::string> metric_names(const MetricsOptions& options) {
  std::vector<std::string> names;
  for (int k : options.recall_at) names.push_back(fmt::format("R@{}", k));
  names.push_back(fmt::format("MRR@{}", options.mrr_at));
  names.push_back(fmt::format("nDCG@{}", options.ndcg_at));
  return names;
}

std::string format_metrics(const Evaluation& evaluation, const MetricsOptions& options) {
  std::string s;
  for (const auto& name : metric_names(options)) {
    s += fmt::format("{}{} {:.4f}", s.empty() ? "" : "  ", name, evaluation.mean.at(name));
  }
  return s + fmt::format("  (queries {})", evaluation.num_queries);
}

std::string format_per_query_tsv(const Evaluation& evaluation, const MetricsOptions& options) {
  const auto names = metric_names(options);
  std::string s = "qid";
  for (const auto& name : names) s += "\t" + name;
  s += "\n";
  for (const auto& [qid, values] : evaluation.per_query) {  // std::map: by qid
    s += qid;
    for (const auto& name : names) s += fmt::format("\t{}", values.at(name));
    s += "\n";
  }
  return s;
}

}  // namespace dgr::retrieval
