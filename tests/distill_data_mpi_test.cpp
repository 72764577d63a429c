// The prepared distillation data set read by real MPI ranks through EpochSampler: every example is loaded
// exactly once per epoch over the ranks, every rank runs the same number of steps, a rank opens only the
// shards of its own examples, and a run stopped mid-epoch on fewer ranks and resumed from the saved position
// on all ranks loads the rest of the epoch (the union of both parts is every example exactly once).
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "data/distill_data.h"
#include "sharding/sampler.h"
#include "tests/temp_dir.h"

using namespace dgr::data;
using namespace dgr::sharding;

namespace {

constexpr int kExamples = 31;
constexpr int64_t kShardSize = 4;
constexpr int64_t kBatch = 7;
constexpr uint64_t kSeed = 11;

int rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

std::string qid_of(int64_t i) { return fmt::format("q{}", i); }

// Example i: its contents depend on i, so a wrong example read for an index cannot pass.
DistillExample make_example(int i) {
  DistillExample e;
  e.qid = qid_of(i);
  e.query_tokens.assign(static_cast<size_t>(i % 4), i);
  for (int c = 0; c < 1 + i % 3; ++c) {
    DistillCandidate d;
    d.doc = i * 10 + c;
    d.positive = c == 0;
    d.retriever_score = -c;
    d.teacher_score = c;
    d.teacher_rank = (1 + i % 3) - c;
    if (c != 1) d.keys.push_back(CachedKey{{i, c}, static_cast<int8_t>(c % 3), static_cast<uint64_t>(i), -1.0f});
    e.candidates.push_back(d);
  }
  return e;
}

// Rank 0 writes the set into a fresh directory; every rank gets its path.
struct SharedSet {
  std::unique_ptr<dgr::testing::TempDir> tmp;  // rank 0 only
  std::string dir;
  SharedSet() {
    if (rank() == 0) {
      tmp = std::make_unique<dgr::testing::TempDir>("dgr_distill_mpi");
      dir = tmp->file("prep");
      DistillWriter writer(dir, kShardSize);
      for (int i = 0; i < kExamples; ++i) writer.add(make_example(i));
      DistillProvenance p;
      p.max_keys = 40;
      writer.commit(p);
    }
    int length = static_cast<int>(dir.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
    dir.resize(static_cast<size_t>(length));
    MPI_Bcast(dir.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
  }
  ~SharedSet() { MPI_Barrier(MPI_COMM_WORLD); }  // nobody reads when rank 0 removes it
};

// Every rank's values, concatenated in rank order, on every rank.
std::vector<int64_t> allgather(const std::vector<int64_t>& mine) {
  const int n = world_size();
  int count = static_cast<int>(mine.size());
  std::vector<int> counts(static_cast<size_t>(n)), displs(static_cast<size_t>(n));
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < n; ++r) {
    displs[static_cast<size_t>(r)] = total;
    total += counts[static_cast<size_t>(r)];
  }
  std::vector<int64_t> all(static_cast<size_t>(total));
  MPI_Allgatherv(mine.data(), count, MPI_INT64_T, all.data(), counts.data(), displs.data(), MPI_INT64_T, MPI_COMM_WORLD);
  return all;
}

void expect_every_example_once(const std::vector<int64_t>& all, const std::string& what) {
  std::multiset<int64_t> seen(all.begin(), all.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kExamples)) << what;
  for (int i = 0; i < kExamples; ++i) EXPECT_EQ(seen.count(i), 1u) << what << ": example " << i;
}

}  // namespace

TEST(DistillDataMpi, EveryExampleOncePerEpochEqualStepsOwnShardsOnly) {
  SharedSet set;
  DistillDataset data(set.dir);
  ASSERT_EQ(data.size(), kExamples);
  EpochSampler sampler(data.size(), kBatch, kSeed, rank(), world_size());
  std::set<int> own_shards;
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> mine;
    int64_t steps = 0;
    do {
      auto step = sampler.next();
      ++steps;
      for (int64_t i : step.examples) {
        DistillExample e = data.load(i);
        EXPECT_EQ(e.qid, qid_of(i));
        EXPECT_EQ(e.candidates.size(), make_example(static_cast<int>(i)).candidates.size());
        mine.push_back(i);
        own_shards.insert(static_cast<int>(i / kShardSize));
      }
    } while (sampler.position().step_in_epoch != 0);
    int64_t min_steps = 0, max_steps = 0;
    MPI_Allreduce(&steps, &min_steps, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&steps, &max_steps, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_EQ(min_steps, max_steps);
    EXPECT_EQ(max_steps, (kExamples + kBatch - 1) / kBatch);
    expect_every_example_once(allgather(mine), "epoch " + std::to_string(epoch));
  }
  std::set<int> opened(data.shards_opened().begin(), data.shards_opened().end());
  EXPECT_EQ(opened, own_shards) << "rank " << rank() << " opened shards of examples it was not given";
}

TEST(DistillDataMpi, StopOnFewerRanksResumeOnAllAtTheCursor) {
  SharedSet set;
  const int all = world_size();
  const int before = std::max(1, all - 1);  // part 1 runs on the first `before` ranks
  for (int64_t stop_at : {1, 3}) {
    std::vector<int64_t> mine;
    SamplerPosition saved;
    if (rank() < before) {
      DistillDataset data(set.dir);
      EpochSampler sampler(data.size(), kBatch, kSeed, rank(), before);
      for (int64_t s = 0; s < stop_at; ++s) {
        for (int64_t i : sampler.next().examples) {
          EXPECT_EQ(data.load(i).qid, qid_of(i));
          mine.push_back(i);
        }
      }
      saved = sampler.position();
    }
    // The checkpointed position (rank 0's) reaches every rank, as a checkpoint load would.
    int64_t position[2] = {saved.epoch, saved.step_in_epoch};
    MPI_Bcast(position, 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
    EXPECT_EQ(position[0], 0);
    EXPECT_EQ(position[1], stop_at);
    DistillDataset data(set.dir);
    EpochSampler sampler(data.size(), kBatch, kSeed, rank(), all);
    sampler.set_position({position[0], position[1]});
    while (sampler.position().epoch == 0) {
      for (int64_t i : sampler.next().examples) {
        EXPECT_EQ(data.load(i).qid, qid_of(i));
        mine.push_back(i);
      }
    }
    expect_every_example_once(allgather(mine), "stopped at step " + std::to_string(stop_at) + " on " +
                                                    std::to_string(before) + " ranks, resumed on " + std::to_string(all));
  }
}
