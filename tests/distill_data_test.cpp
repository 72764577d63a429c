// The prepared distillation data set: write -> read equals (awkward sizes), damaged and missing files give
// DataErrors naming the file, and read through EpochSampler on 1, 2 and 3 simulated ranks every example is
// loaded exactly once per epoch, each rank opening only the shards of its own examples, also across a stop
// and a resume on another world size. Mined lines and the teacher-list rule are checked here too.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/distill_data.h"
#include "data/mined.h"
#include "data/mined_writer.h"
#include "sharding/sampler.h"
#include "tests/temp_dir.h"

namespace fs = std::filesystem;
using namespace dgr;
using namespace dgr::data;
using namespace dgr::sharding;

namespace {

// Example `i` with sizes that depend on i: some queries with no tokens, candidates with no keys, one query
// with no candidates at all; values depend on (i, candidate, key) so a misplaced range cannot pass.
DistillExample make_example(int i) {
  std::mt19937 rng(static_cast<uint32_t>(1000 + i));
  DistillExample e;
  e.qid = "q" + std::to_string(i) + (i % 4 == 0 ? "-long-query-id" : "");
  int num_tokens = i % 5 == 3 ? 0 : 1 + static_cast<int>(rng() % 9);
  for (int t = 0; t < num_tokens; ++t) e.query_tokens.push_back(i * 100 + t);
  int num_candidates = i == 5 ? 0 : 1 + static_cast<int>(rng() % 7);
  std::vector<int32_t> ranks(static_cast<size_t>(num_candidates));
  for (int c = 0; c < num_candidates; ++c) ranks[static_cast<size_t>(c)] = c + 1;
  std::shuffle(ranks.begin(), ranks.end(), rng);
  for (int c = 0; c < num_candidates; ++c) {
    DistillCandidate cand;
    cand.doc = i * 10 + c;
    cand.positive = (i + c) % 3 == 0;
    cand.retriever_score = 1000.0 - i - 0.25 * c;
    cand.teacher_score = -0.5 * ranks[static_cast<size_t>(c)] + i;
    cand.teacher_rank = ranks[static_cast<size_t>(c)];
    int num_keys = c == 1 ? 0 : static_cast<int>(rng() % 5);
    for (int k = 0; k < num_keys; ++k) {
      CachedKey key;
      int len = 1 + (i + c + k) % 6;
      for (int t = 0; t < len; ++t) key.tokens.push_back(i * 1000 + c * 100 + k * 10 + t);
      key.view = static_cast<int8_t>((i + k) % 3);
      key.count = static_cast<uint64_t>(i) * 7 + static_cast<uint64_t>(k) + (k == 2 ? (uint64_t{1} << 40) : 0);
      key.score = -0.125f * static_cast<float>(k + 1) - static_cast<float>(c);
      cand.keys.push_back(key);
    }
    e.candidates.push_back(cand);
  }
  return e;
}

void expect_equal(const DistillExample& a, const DistillExample& b) {
  ASSERT_EQ(a.qid, b.qid);
  EXPECT_EQ(a.query_tokens, b.query_tokens) << a.qid;
  ASSERT_EQ(a.candidates.size(), b.candidates.size()) << a.qid;
  for (size_t c = 0; c < a.candidates.size(); ++c) {
    const auto &x = a.candidates[c], &y = b.candidates[c];
    EXPECT_EQ(x.doc, y.doc);
    EXPECT_EQ(x.positive, y.positive);
    EXPECT_EQ(x.retriever_score, y.retriever_score);
    EXPECT_EQ(x.teacher_score, y.teacher_score);
    EXPECT_EQ(x.teacher_rank, y.teacher_rank);
    ASSERT_EQ(x.keys.size(), y.keys.size()) << a.qid << " candidate " << c;
    for (size_t k = 0; k < x.keys.size(); ++k) {
      EXPECT_EQ(x.keys[k].tokens, y.keys[k].tokens);
      EXPECT_EQ(x.keys[k].view, y.keys[k].view);
      EXPECT_EQ(x.keys[k].count, y.keys[k].count);
      EXPECT_EQ(x.keys[k].score, y.keys[k].score);
    }
  }
}

DistillProvenance provenance() {
  DistillProvenance p;
  p.max_keys = 40;
  p.tokenizer_sha256 = "tok";
  p.fm_index_sha256 = "fm";
  p.pids_sha256 = "pids";
  p.extra_json = R"({"note": "test"})";
  return p;
}

std::string write_set(const std::string& dir, int num_examples, int64_t shard_size) {
  DistillWriter writer(dir, shard_size);
  for (int i = 0; i < num_examples; ++i) writer.add(make_example(i));
  writer.commit(provenance());
  return dir;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no DataError)";
}

}  // namespace

TEST(DistillData, RoundTripAwkwardSizes) {
  for (auto [num, shard_size] : std::vector<std::pair<int, int64_t>>{{1, 1}, {7, 3}, {9, 3}, {13, 64}, {10, 1}}) {
    dgr::testing::TempDir tmp("dgr_distill");
    const std::string dir = write_set(tmp.file("prep"), num, shard_size);
    DistillDataset data(dir);
    ASSERT_EQ(data.size(), num);
    const auto& m = data.manifest();
    EXPECT_EQ(m.shards.size(), static_cast<size_t>((num + shard_size - 1) / shard_size));
    EXPECT_EQ(m.shards.back().num_examples, num - shard_size * (static_cast<int64_t>(m.shards.size()) - 1));
    EXPECT_EQ(m.max_keys, 40);
    EXPECT_EQ(m.tokenizer_sha256, "tok");
    EXPECT_EQ(nlohmann::json::parse(m.json).at("note"), "test");
    // Backwards, so that every load after the first changes shard when shards are small.
    for (int i = num - 1; i >= 0; --i) expect_equal(data.load(i), make_example(i));
    for (int i = 0; i < num; ++i) expect_equal(data.load(i), make_example(i));
    EXPECT_EQ(data.shards_opened().size(), m.shards.size());
    EXPECT_THROW(data.load(num), Error);
    EXPECT_THROW(data.load(-1), Error);
    EXPECT_FALSE(fs::exists(dir + ".tmp." + std::to_string(::getpid())));
  }
}

TEST(DistillData, EmptyPiecesSurvive) {
  // Example 5 has no candidates, example 3 no query tokens, every candidate 1 no keys.
  dgr::testing::TempDir tmp("dgr_distill");
  DistillDataset data(write_set(tmp.file("prep"), 8, 3));
  EXPECT_TRUE(data.load(5).candidates.empty());
  EXPECT_TRUE(data.load(3).query_tokens.empty());
  auto e = data.load(6);
  ASSERT_GE(e.candidates.size(), 2u);
  EXPECT_TRUE(e.candidates[1].keys.empty());
}

TEST(DistillData, DamagedShardIsADataErrorNamingIt) {
  dgr::testing::TempDir tmp("dgr_distill");
  const std::string dir = write_set(tmp.file("prep"), 9, 3);
  const std::string shard1 = dir + "/shard-00001.h5";
  {
    std::fstream f(shard1, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(shard1) / 2));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(fs::file_size(shard1) / 2));
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  DistillDataset data(dir);
  expect_equal(data.load(0), make_example(0));  // shard 0 is fine
  std::string message = error_of([&] { data.load(4); });
  EXPECT_NE(message.find("shard-00001.h5"), std::string::npos) << message;
  EXPECT_NE(message.find("sha256"), std::string::npos) << message;
  EXPECT_NE(message.find("dgr prepare"), std::string::npos) << message;
}

TEST(DistillData, TruncatedShardWithoutChecksumsIsStillADataError) {
  dgr::testing::TempDir tmp("dgr_distill");
  const std::string dir = write_set(tmp.file("prep"), 9, 3);
  const std::string shard2 = dir + "/shard-00002.h5";
  fs::resize_file(shard2, fs::file_size(shard2) / 3);
  DistillDataset data(dir, /*verify_checksums=*/false);
  std::string message = error_of([&] { data.load(7); });
  EXPECT_NE(message.find("shard-00002.h5"), std::string::npos) << message;
}

TEST(DistillData, MissingOrInconsistentManifestAndShards) {
  dgr::testing::TempDir tmp("dgr_distill");
  const std::string dir = write_set(tmp.file("prep"), 7, 3);
  const std::string manifest = dir + "/manifest.json";
  const std::string original = [&] {
    std::ifstream in(manifest);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();

  fs::remove(dir + "/shard-00002.h5");
  {
    DistillDataset data(dir);
    expect_equal(data.load(1), make_example(1));
    std::string message = error_of([&] { data.load(6); });
    EXPECT_NE(message.find("shard-00002.h5: missing"), std::string::npos) << message;
  }

  auto edited = nlohmann::json::parse(original);
  edited["num_examples"] = 8;
  std::ofstream(manifest) << edited.dump();
  std::string message = error_of([&] { DistillDataset data(dir); });
  EXPECT_NE(message.find("manifest.json"), std::string::npos) << message;
  EXPECT_NE(message.find("the shards hold 7 examples, the manifest says 8"), std::string::npos) << message;

  edited = nlohmann::json::parse(original);
  edited["version"] = 99;
  std::ofstream(manifest) << edited.dump();
  message = error_of([&] { DistillDataset data(dir); });
  EXPECT_NE(message.find("format version 99"), std::string::npos) << message;

  fs::remove(manifest);
  message = error_of([&] { DistillDataset data(dir); });
  EXPECT_NE(message.find("manifest.json: missing"), std::string::npos) << message;
}

TEST(DistillData, ShardOfAnotherSetIsRejected) {
  dgr::testing::TempDir tmp("dgr_distill");
  const std::string a = write_set(tmp.file("a"), 6, 3);
  const std::string b = tmp.file("b");
  {
    DistillWriter writer(b, 3);
    for (int i = 0; i < 9; ++i) writer.add(make_example(100 + i));
    writer.commit(provenance());
  }
  // b's shard 1 copied over a's shard 1: same name and example range, other contents.
  fs::copy_file(b + "/shard-00001.h5", a + "/shard-00001.h5", fs::copy_options::overwrite_existing);
  DistillDataset checked(a);
  EXPECT_NE(error_of([&] { checked.load(3); }).find("sha256"), std::string::npos);
}

TEST(DistillData, WriterChecksAndLeavesNothingBehindWithoutCommit) {
  dgr::testing::TempDir tmp("dgr_distill");
  const std::string dir = tmp.file("prep");
  {
    DistillWriter writer(dir, 2);
    writer.add(make_example(0));
    writer.add(make_example(1));
    writer.add(make_example(2));  // a shard was written into the temporary directory
    DistillExample bad = make_example(3);
    ASSERT_GE(bad.candidates.size(), 2u);
    bad.candidates[1].teacher_rank = bad.candidates[0].teacher_rank;
    EXPECT_THROW(writer.add(bad), DataError);
    bad = make_example(3);
    bad.candidates[0].keys.push_back(CachedKey{{1, 2}, 3, 1, 0});
    EXPECT_THROW(writer.add(bad), DataError);
  }
  EXPECT_FALSE(fs::exists(dir));
  for (const auto& entry : fs::directory_iterator(tmp.path())) ADD_FAILURE() << "left behind: " << entry.path();

  fs::create_directories(dir);
  std::ofstream(dir + "/notes.txt") << "mine";
  EXPECT_THROW(DistillWriter(dir, 2), ConfigError);  // not a prepared directory: never replaced
  fs::remove_all(dir);
  write_set(dir, 3, 2);
  write_set(dir, 5, 2);  // a prepared directory is replaced
  EXPECT_EQ(DistillDataset(dir).size(), 5);
}

// Every example once per epoch over the ranks, equal step counts, and a rank opens only its examples' shards.
TEST(DistillData, SamplerCoversEveryExampleOncePerEpochOnOneTwoThreeRanks) {
  dgr::testing::TempDir tmp("dgr_distill");
  const int kExamples = 23;
  const std::string dir = write_set(tmp.file("prep"), kExamples, 4);
  for (int world : {1, 2, 3}) {
    for (int64_t batch : {1, 5, 23, 30}) {
      std::vector<EpochSampler> samplers;
      std::vector<DistillDataset> data;
      for (int r = 0; r < world; ++r) {
        samplers.emplace_back(kExamples, batch, 17, r, world);
        data.emplace_back(dir);
      }
      const int64_t steps = samplers[0].steps_per_epoch();
      for (int r = 1; r < world; ++r) ASSERT_EQ(samplers[static_cast<size_t>(r)].steps_per_epoch(), steps);
      std::vector<std::set<int>> own_shards(static_cast<size_t>(world));  // [rank] shards of its examples
      for (int epoch = 0; epoch < 2; ++epoch) {
        std::map<std::string, int> seen;  // qid -> loads this epoch
        for (int64_t s = 0; s < steps; ++s) {
          int64_t step_total = 0;
          for (int r = 0; r < world; ++r) {
            auto step = samplers[static_cast<size_t>(r)].next();
            EXPECT_EQ(step.epoch, epoch);
            EXPECT_EQ(step.step_in_epoch, s);
            step_total += static_cast<int64_t>(step.examples.size());
            for (int64_t i : step.examples) {
              auto e = data[static_cast<size_t>(r)].load(i);
              expect_equal(e, make_example(static_cast<int>(i)));
              ++seen[e.qid];
              own_shards[static_cast<size_t>(r)].insert(static_cast<int>(i / 4));
            }
          }
          EXPECT_EQ(step_total, std::min<int64_t>(batch, kExamples - s * batch));
        }
        ASSERT_EQ(seen.size(), static_cast<size_t>(kExamples)) << "world " << world << " batch " << batch;
        for (const auto& [qid, n] : seen) EXPECT_EQ(n, 1) << qid;
      }
      for (int r = 0; r < world; ++r) {
        std::set<int> opened(data[static_cast<size_t>(r)].shards_opened().begin(),
                             data[static_cast<size_t>(r)].shards_opened().end());
        EXPECT_EQ(opened, own_shards[static_cast<size_t>(r)]) << "rank " << r << " of " << world;
      }
    }
  }
}

// A run stopped mid-epoch and resumed from the saved position, on the same or another world size, loads the
// rest of the epoch: the two parts together are every example exactly once.
TEST(DistillData, ResumeMidEpochOnAnotherWorldSize) {
  dgr::testing::TempDir tmp("dgr_distill");
  const int kExamples = 29;
  const int64_t kBatch = 6;
  const std::string dir = write_set(tmp.file("prep"), kExamples, 5);
  for (int before : {1, 2, 3}) {
    for (int after : {1, 2, 3}) {
      for (int64_t stop_at : {1, 3}) {
        std::multiset<std::string> loaded;
        SamplerPosition saved;
        {
          // Part 1: one full epoch, then stop_at steps of epoch 1.
          std::vector<EpochSampler> samplers;
          for (int r = 0; r < before; ++r) samplers.emplace_back(kExamples, kBatch, 5, r, before);
          DistillDataset data(dir);
          for (int64_t s = 0; s < samplers[0].steps_per_epoch() + stop_at; ++s) {
            for (auto& sampler : samplers) {
              auto step = sampler.next();
              for (int64_t i : step.examples) {
                if (step.epoch == 1) loaded.insert(data.load(i).qid);
              }
            }
          }
          saved = samplers[0].position();
          for (auto& sampler : samplers) {
            EXPECT_EQ(sampler.position().epoch, saved.epoch);
            EXPECT_EQ(sampler.position().step_in_epoch, saved.step_in_epoch);
          }
          EXPECT_EQ(saved.epoch, 1);
          EXPECT_EQ(saved.step_in_epoch, stop_at);
        }
        // Part 2: new samplers (another world size), positioned at the saved cursor, to the end of epoch 1.
        std::vector<EpochSampler> samplers;
        for (int r = 0; r < after; ++r) {
          samplers.emplace_back(kExamples, kBatch, 5, r, after);
          samplers.back().set_position(saved);
        }
        DistillDataset data(dir);
        while (samplers[0].position().epoch == 1) {
          for (auto& sampler : samplers) {
            auto step = sampler.next();
            for (int64_t i : step.examples) loaded.insert(data.load(i).qid);
          }
        }
        ASSERT_EQ(loaded.size(), static_cast<size_t>(kExamples)) << before << " -> " << after << " at " << stop_at;
        for (int i = 0; i < kExamples; ++i) EXPECT_EQ(loaded.count(make_example(i).qid), 1u) << i;
      }
    }
  }
}

// ---------------------------------------------------------------------------------- mined lines, teachers

TEST(Mined, LineRoundTripAndErrorsNameTheLine) {
  MinedQuery q;
  q.qid = "q1";
  q.text = "a query\twith a tab";
  q.tokens = {5, 6, 7};
  for (int c = 0; c < 3; ++c) {
    MinedCandidate m;
    m.pid = "p" + std::to_string(c);
    m.doc = c * 2;
    m.positive = c == 1;
    m.score = 10.0 - c;
    if (c != 2) {
      m.keys.push_back(CachedKey{{9, 10, 11}, 0, 3, -1.5f});
      m.key_texts.push_back("<doc> x @@");
      m.keys.push_back(CachedKey{{12}, 2, 1ull << 35, -0.25f});
      m.key_texts.push_back("|| y");
    }
    q.candidates.push_back(m);
  }
  const std::string line = mined_query_json(q);
  MinedQuery back = parse_mined_query(line, true, "c.jsonl", 3);
  EXPECT_EQ(back.qid, q.qid);
  EXPECT_EQ(back.text, q.text);
  EXPECT_EQ(back.tokens, q.tokens);
  ASSERT_EQ(back.candidates.size(), 3u);
  EXPECT_EQ(back.candidates[1].keys[1].count, 1ull << 35);
  EXPECT_EQ(back.candidates[0].keys[0].tokens, (std::vector<int32_t>{9, 10, 11}));
  EXPECT_EQ(back.candidates[0].key_texts[0], "<doc> x @@");
  EXPECT_TRUE(back.candidates[2].keys.empty());
  EXPECT_TRUE(parse_mined_query(line, false, "c.jsonl", 3).candidates[0].keys.empty());

  auto broken = nlohmann::json::parse(line);
  broken["candidates"][1]["rank"] = 5;
  std::string message = error_of([&] { parse_mined_query(broken.dump(), true, "c.jsonl", 3); });
  EXPECT_NE(message.find("c.jsonl:3:"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 5, expected 2"), std::string::npos) << message;
  broken = nlohmann::json::parse(line);
  broken["candidates"][0]["keys"][0]["view"] = "side";
  message = error_of([&] { parse_mined_query(broken.dump(), true, "c.jsonl", 4); });
  EXPECT_NE(message.find("c.jsonl:4:"), std::string::npos) << message;
  EXPECT_NE(message.find("'side'"), std::string::npos) << message;
  broken = nlohmann::json::parse(line);
  broken["candidates"][2]["score"] = 50;
  message = error_of([&] { parse_mined_query(broken.dump(), true, "c.jsonl", 2); });
  EXPECT_NE(message.find("retriever's order"), std::string::npos) << message;
  message = error_of([&] { parse_mined_query("{\"qid\": ", true, "c.jsonl", 9); });
  EXPECT_NE(message.find("c.jsonl:9: not valid JSON"), std::string::npos) << message;
}

TEST(Mined, TeacherListRanksUnscoredLastBelowEveryScore) {
  // Candidates 0..4 in retriever order; 1 and 3 unscored; 0 and 4 tie (tie order decides).
  auto list = teacher_list({2.0, std::nullopt, 5.0, std::nullopt, 2.0}, {7, 0, 1, 0, 3});
  EXPECT_EQ(list.rank, (std::vector<int32_t>{3, 4, 1, 5, 2}));
  EXPECT_EQ(list.score, (std::vector<double>{2.0, 1.0, 5.0, 0.0, 2.0}));
  EXPECT_EQ(list.unscored, 2);
  auto none = teacher_list({std::nullopt, std::nullopt}, {0, 0});
  EXPECT_EQ(none.rank, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(none.score, (std::vector<double>{-1.0, -2.0}));
  auto empty = teacher_list({}, {});
  EXPECT_TRUE(empty.rank.empty());
}

// `dgr prepare`'s filter (method.md section 7), rule by rule: a query is kept with >= min_positives
// positives, >= min_negatives negatives and retriever score(top positive) < score(top negative) +
// max_score_gap; a dropped query counts under the first rule it fails, and the kept ones are exactly those
// that pass every rule, with their candidates, labels and teacher ranks.
namespace prepare_filter {

MinedQuery mined(const std::string& qid, const std::vector<std::pair<double, bool>>& scored) {
  MinedQuery q;
  q.qid = qid;
  q.text = "query " + qid;
  q.tokens = {10, 11};
  for (size_t i = 0; i < scored.size(); ++i) {
    MinedCandidate c;
    c.pid = "p" + std::to_string(i);
    c.doc = static_cast<int32_t>(i);
    c.score = scored[i].first;
    c.positive = scored[i].second;
    c.keys = {CachedKey{{static_cast<int32_t>(20 + i), 7}, 0, 1, -0.5f}};
    c.key_texts = {"key"};
    q.candidates.push_back(std::move(c));
  }
  return q;
}

// n candidates with scores start, start - 1, ...; the ones at `positives` are positive.
std::vector<std::pair<double, bool>> list(int n, double start, std::set<int> positives) {
  std::vector<std::pair<double, bool>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(start - i, positives.count(i) > 0);
  return out;
}

}  // namespace prepare_filter

TEST(Prepare, FilterDropsQueriesByEachRuleAndKeepsTheRest) {
  using namespace prepare_filter;
  dgr::testing::TempDir tmp("dgr_prepare");
  {
    std::ofstream corpus(tmp.file("corpus.tsv"));
    corpus << "pid\ttitle\ttext\n";
    for (int i = 0; i < 12; ++i) corpus << "p" << i << "\ttitle " << i << "\ttext " << i << "\n";
  }
  // With min_positives 1, min_negatives 4, max_score_gap 5:
  const std::vector<MinedQuery> queries = {
      mined("keep_a", list(8, 100, {2})),            // positive below 2 negatives: kept
      mined("no_pos", list(8, 100, {})),             // no positive (and enough negatives): rule 1
      mined("no_pos_few", list(2, 100, {})),         // fails rules 1 and 2: counted under rule 1 only
      mined("few_neg", list(4, 100, {0, 1})),        // 2 negatives: rule 2
      mined("gap", {{101, true}, {90, false}, {89, false}, {88, false}, {87, false}}),  // 101 >= 90 + 5: rule 3
      mined("gap_edge", {{95, true}, {90, false}, {89, false}, {88, false}, {87, false}}),  // 95 < 95 fails: rule 3
      mined("keep_b", {{94.5, true}, {90, false}, {89, false}, {88, false}, {87, false}}),  // 94.5 < 95: kept
      mined("keep_c", list(6, 50, {5})),             // positive last: kept (gap negative)
  };
  const std::string mined_dir = tmp.file("mined");
  {
    MinedWriter writer(mined_dir, false, {tmp.file("corpus.tsv"), "", tmp.path().string()}, 40);
    EXPECT_EQ(writer.open(R"({"test": 1})"), 0u);
    for (size_t i = 0; i < queries.size(); ++i) writer.add(i, mined_query_json(queries[i]));
    const nlohmann::json provenance = {
        {"split", "train"},
        {"model", {{"path", "model.h5"}, {"sha256", "0"}}},
        {"index", {{"dir", ""}, {"tokenizer_sha256", "t"}, {"fm_index_sha256", "f"}, {"pids_sha256", "p"}}},
        {"retrieval", {{"max_keys", 40}}}};
    writer.commit(provenance.dump(), 1, 1.0, 8.0);
  }
  {
    std::ofstream run(tmp.file("teacher.trec"));
    for (const auto& q : queries) {
      for (size_t c = 0; c < q.candidates.size(); ++c) {  // the teacher reverses the retriever's order
        const size_t rank = q.candidates.size() - c;
        run << q.qid << " Q0 " << q.candidates[c].pid << " " << rank << " " << 10.0 - static_cast<double>(rank) << " t\n";
      }
    }
  }
  PrepareOptions options;
  options.mined_dir = mined_dir;
  options.teacher_run = tmp.file("teacher.trec");
  options.out_dir = tmp.file("prep");
  options.min_positives = 1;
  options.min_negatives = 4;
  options.max_score_gap = 5;
  const PrepareSummary s = prepare_distill_data(options);
  EXPECT_EQ(s.mined_queries, 8);
  EXPECT_EQ(s.dropped_no_positive, 2);
  EXPECT_EQ(s.dropped_few_negatives, 1);
  EXPECT_EQ(s.dropped_score_gap, 2);
  EXPECT_EQ(s.kept, 3);
  EXPECT_EQ(s.candidates, 8 + 5 + 6);
  // Score gaps, before the filter, over the 6 queries with a positive and a negative: -2 (keep_a), +2
  // (few_neg), +11, +5, +4.5, -5 (keep_c): median |gap| (4.5 + 5) / 2 (the mean would be 29.5 / 6), positive
  // first in 4 of 6.
  EXPECT_EQ(s.gap_queries, 6);
  EXPECT_DOUBLE_EQ(s.median_abs_gap, 4.75);
  EXPECT_DOUBLE_EQ(s.positive_first, 4.0 / 6);

  DistillDataset data(options.out_dir);
  ASSERT_EQ(data.size(), 3);
  const std::vector<std::string> kept = {"keep_a", "keep_b", "keep_c"};
  const std::vector<const MinedQuery*> sources = {&queries[0], &queries[6], &queries[7]};
  for (int64_t i = 0; i < data.size(); ++i) {
    const DistillExample e = data.load(i);
    EXPECT_EQ(e.qid, kept[static_cast<size_t>(i)]);
    const MinedQuery& q = *sources[static_cast<size_t>(i)];
    ASSERT_EQ(e.candidates.size(), q.candidates.size());
    for (size_t c = 0; c < e.candidates.size(); ++c) {
      EXPECT_EQ(e.candidates[c].positive, q.candidates[c].positive);
      EXPECT_EQ(e.candidates[c].retriever_score, q.candidates[c].score);
      EXPECT_EQ(e.candidates[c].teacher_rank, static_cast<int32_t>(q.candidates.size() - c));
    }
  }
  // The manifest records the filter and the counts per rule.
  const auto manifest = nlohmann::json::parse(std::ifstream(tmp.file("prep/manifest.json")));
  EXPECT_EQ(manifest.at("counts").at("dropped_no_positive"), 2);
  EXPECT_EQ(manifest.at("counts").at("dropped_few_negatives"), 1);
  EXPECT_EQ(manifest.at("counts").at("dropped_score_gap"), 2);
  EXPECT_EQ(manifest.at("filter").at("min_negatives"), 4);
  EXPECT_DOUBLE_EQ(manifest.at("score_gaps").at("median_abs_gap").get<double>(), 4.75);

  // Each rule alone: loosening it keeps the queries it dropped (and only those).
  auto kept_with = [&](int min_positives, int min_negatives, double gap, const std::string& out) {
    PrepareOptions o = options;
    o.min_positives = min_positives;
    o.min_negatives = min_negatives;
    o.max_score_gap = gap;
    o.out_dir = tmp.file(out);
    return prepare_distill_data(o).kept;
  };
  EXPECT_EQ(kept_with(0, 4, 5, "p1"), 4);   // + no_pos
  EXPECT_EQ(kept_with(1, 2, 5, "p2"), 4);   // + few_neg
  EXPECT_EQ(kept_with(1, 4, std::numeric_limits<double>::infinity(), "p3"), 5);  // + gap, gap_edge
  // Nothing passes: an error naming the counts, and no output directory.
  PrepareOptions none = options;
  none.min_negatives = 100;
  none.out_dir = tmp.file("none");
  EXPECT_THROW(prepare_distill_data(none), DataError);
  EXPECT_FALSE(fs::exists(none.out_dir));
}
