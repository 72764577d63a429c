// The checkpoint directory protocol: one directory per step, written by every rank on a background
// thread, committed by rank 0 (marker + rename) only after every rank's part is durable; pruning to the
// last K; resume from the newest committed step that verifies, falling back past damaged ones.
// See docs/checkpoint-format.md for the layout and Note [Commit protocol] in store.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoints/array.h"
#include "comm/communicator.h"
#include "common/error.h"
#include "common/world.h"

namespace dgr::checkpoints {

constexpr int kFormatVersion = 1;                       // meta.json "format_version" and each file's root attribute
constexpr const char* kCheckpointFormat = "dgr-checkpoint";  // meta.json "dgr_format" and each file's root attribute

// A checkpoint that exists but cannot be used (missing marker, truncated file, checksum mismatch, unknown
// format version, ...). load_latest() skips these with a warning; other CheckpointErrors stop it.
class DamagedCheckpointError : public CheckpointError { using CheckpointError::CheckpointError; };

struct StoreOptions {
  std::string dir;     // checkpoint root; steps go to DIR/step-00000040/
  int keep_last = 3;   // committed checkpoints kept after each commit (0 = keep all)
  bool async = true;   // write on a background thread (false: save() returns after the commit)
  size_t chunk_bytes = size_t{4} << 20;  // HDF5 chunk size bound (Fletcher-32 works per chunk)
  // Deadline of each agreement between the ranks (Note [Commit protocol] in store.cpp): ranks that finish
  // their part first wait this long for the slowest rank's write; then the job ends with a CommError that
  // names the ranks that did not arrive. Raise it for checkpoints that take longer to write.
  int64_t timeout_ms = comm::kControlTimeoutMs;
  // Tests only: runs on the writer thread before each file is created (array == "") and before each array
  // is written. It may sleep (slow rank) or throw (failed write).
  std::function<void(const std::string& file, const std::string& array)> test_hook;
};

// A host array the writer copies itself (Note [Overlapped copy] in store.cpp): `data` (num_elements x
// dtype bytes, row-major) must stay valid and unchanged from save() until Store::wait_for_copies() returns.
struct ArraySource {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
  const void* data = nullptr;
};

struct SaveRequest {
  int64_t step = 0;
  std::vector<NamedArray> replicated;  // parameters + optimizer state; rank 0's go to model.h5, others' are dropped
                                       // (ranks other than 0 may leave it empty: Store::writes_replicated())
  // Replicated arrays still in the caller's memory: the writer copies them into staging buffers before it
  // writes (rank 0; other ranks ignore them). Names must not repeat those of `replicated`.
  std::vector<ArraySource> replicated_sources;
  std::vector<NamedArray> per_rank;    // this rank's RNG states etc.; go to rank-RRRRR.h5
  std::string config_json = "{}";      // effective config (rank 0's goes to meta.json "config")
  std::string state_json = "{}";       // LR schedule, epoch, permutation seed, ... (rank 0's -> meta.json "state")
  std::string rank_state_json = "{}";  // this rank's small state, e.g. per-shard data cursors (its rank file)
};

struct LoadedCheckpoint {
  int64_t step = 0;
  int world_size = 0;         // ranks that wrote it
  std::string dir;            // DIR/step-00000040
  std::string dgr_version;    // dgr that wrote it
  std::string config_json;    // as saved (JSON text)
  std::string state_json;
  std::string rank_state_json;          // this rank's ("{}" when loaded with rank < 0)
  std::vector<NamedArray> replicated;   // model.h5, sorted by name
  std::vector<NamedArray> per_rank;     // this rank's file, sorted by name (empty when rank < 0)
};

class Store {
 public:
  // Collective (every rank, same options): makes the store's own host communicator (for its agreements,
  // used by the calling thread only), rank 0 creates `dir`; every rank throws if it cannot.
  Store(StoreOptions options, const World& world);
  // Local: waits for a running background write but does NOT commit it (call wait() first); a step that
  // was written but not committed stays invisible to load_latest().
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Collective: every rank calls it for the same step. First completes the previous save (waits for it
  // and commits it, like wait()), then hands the request to the writer and returns (async) or writes and
  // commits before returning (sync). Throws CheckpointError on every rank when any rank's part of the
  // previous or this save failed; the last committed checkpoint is then untouched.
  void save(SaveRequest&& request);
  // Local: blocks until the writer has copied the replicated_sources of the last save, after which their
  // memory may change (the trainer calls it before its next optimizer step). No-op when there are none.
  // A failed copy is reported by the commit (wait() or the next save()), like a failed write.
  void wait_for_copies();
  // Collective: blocks until every rank's pending write is durable, then rank 0 commits it (COMMITTED
  // marker, rename, prune). No-op when nothing is pending. Call it at the end of training and before
  // exiting on a signal. Throws CheckpointError on every rank when any rank's write or the commit failed.
  void wait();
  // Local: a save was started and is not committed yet.
  bool pending() const;
  // Local: this rank's writer is still writing (a wait() now would block on it, not only on the commit).
  bool writing() const;
  // Collective: completes a pending save, then every rank loads the newest committed step that verifies on
  // every rank (rank 0's listing is used). A damaged step is skipped with a warning; nullopt when there
  // is none; CheckpointError when every committed step is damaged or one cannot be used by this job (e.g.
  // another world size).
  std::optional<LoadedCheckpoint> load_latest();

  const StoreOptions& options() const;
  // Host buffers for the arrays of the next SaveRequest (StagingPool): the writer gives each save's
  // buffers back once its files are written, so a trainer that takes from here copies its tensors into
  // memory that is already mapped. Thread-safe.
  StagingPool& staging();
  // Local: whether this rank's SaveRequest.replicated is written (rank 0) or dropped (every other rank),
  // so that other ranks can skip the host copy of the model.
  bool writes_replicated() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string step_dir_name(int64_t step);  // "step-00000040"
// Local: committed steps under `dir` (directories named step-<digits> holding COMMITTED), ascending.
std::vector<int64_t> committed_steps(const std::string& dir);
// Local: reads and verifies one step directory (marker, meta.json, format version, sha256 of the files
// read, HDF5 checksums). rank < 0 reads the replicated part only (any world size); otherwise the world
// size must match and this rank's file is read too. DamagedCheckpointError names the file and what to do.
// With `model_only_on_other_world_size`, a step written by another number of ranks loads its replicated
// part only (per_rank empty, rank_state_json "{}"): the caller re-derives per-rank state (resume on another
// world size); without it that is a CheckpointError.
LoadedCheckpoint load_step(const std::string& step_dir, int rank, int world_size,
                           bool model_only_on_other_world_size = false);

}  // namespace dgr::checkpoints
