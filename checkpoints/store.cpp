// The checkpoint writer: per-rank background writes, the commit collective, pruning, and resume.
//
// Note [Commit protocol]
// save(N) on every rank (training thread):
//   1. complete save(N-1) if one is pending (step 5 below): a second save waits for the first;
//   2. every rank checks its request and rank 0 creates DIR/step-N.tmp/; the ranks agree (Impl::agree: gather
//      to rank 0, which decides, and a broadcast of its decision) and all throw if any failed, so nothing is
//      half-started;
//   3. a writer thread (no MPI calls, ever) copies the request's replicated_sources (Note [Overlapped
//      copy]), then writes rank-R.h5 (and model.h5 on rank 0) into step-N.tmp/,
//      fsyncs each file and computes its sha256; the training thread returns at once (async) or goes on
//      to step 5 (sync).
// wait() / the next save() (training thread):
//   4. join the local writer: this rank's files are durable (or its error is known);
//   5. gather every rank's outcome and file list to rank 0 (Impl::agree; its communicator sleeps while it
//      waits, so a rank waiting here takes no core from rank 0's write, and its deadline is
//      StoreOptions::timeout_ms, long enough for the slowest rank's write); when all succeeded rank 0 writes
//      meta.json, then COMMITTED (each temp + fsync + rename), fsyncs the
//      directory, renames step-N.tmp/ to step-N/ and fsyncs DIR, then prunes (renames the victims at once,
//      removes their files on a background thread); the outcome is broadcast and every rank throws the same
//      CheckpointError when a write or the commit failed.
// A crash anywhere before the final rename leaves step-N.tmp/, which load never looks at; the marker inside
// the renamed directory is checked as well, so a directory whose marker is missing is never loaded.
//
// Note [Overlapped copy]
// A checkpoint is a snapshot of the parameters and optimizer state at one step, so the host copy of them
// must be taken before anything writes them again. Taking it on the training thread blocks training for
// a memcpy of three times the model (weights, Adam's two moments). But the next step's forward and
// backward only READ the parameters and optimizer state; only the optimizer step writes them. So the
// trainer hands the writer pointers to its host tensors (SaveRequest.replicated_sources), the writer
// copies them into staging buffers first, at normal priority, while the next forward and backward run,
// and the trainer calls wait_for_copies() just before its optimizer step: usually the copy finished long
// before. Only then does the writer lower its priority and write the files.
#include "checkpoints/store.h"

#include <condition_variable>
#include <mutex>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <future>
#include <system_error>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/hdf5_file.h"
#include "checkpoints/layout.h"
#include "common/files.h"
#include "common/log.h"

namespace dgr::checkpoints {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::shared_ptr<spdlog::logger> logger() { return log::get("ckpt"); }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct FileRecord {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;
};

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Throws CheckpointError when the arrays cannot be written (bad or repeated name, byte count off).
void check_request_arrays(const std::vector<NamedArray>& arrays, const char* which) {
  std::vector<std::string> names;
  for (const auto& a : arrays) {
    check_array_name(a.name);
    DGR_CHECK_AS(CheckpointError, a.bytes.size() == a.num_bytes(),
                 "SaveRequest.{}: array '{}' has {} bytes, but shape {} of {} needs {}", which, a.name,
                 a.bytes.size(), shape_string(a.shape), dtype_name(a.dtype), a.num_bytes());
    names.push_back(a.name);
  }
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  DGR_CHECK_AS(CheckpointError, dup == names.end(), "SaveRequest.{}: array '{}' appears twice", which,
               dup == names.end() ? "" : *dup);
}

// Throws CheckpointError when the sources cannot be copied (bad or repeated name, also among `arrays`).
void check_request_sources(const std::vector<ArraySource>& sources, const std::vector<NamedArray>& arrays) {
  std::vector<std::string> names;
  for (const auto& a : arrays) names.push_back(a.name);
  for (const auto& source : sources) {
    check_array_name(source.name);
    int64_t elements = 1;
    for (int64_t d : source.shape) {
      DGR_CHECK_AS(CheckpointError, d >= 0, "SaveRequest.replicated_sources: '{}' has shape {}", source.name,
                   shape_string(source.shape));
      elements *= d;
    }
    DGR_CHECK_AS(CheckpointError, elements == 0 || source.data != nullptr,
                 "SaveRequest.replicated_sources: '{}' has no data pointer", source.name);
    names.push_back(source.name);
  }
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  DGR_CHECK_AS(CheckpointError, dup == names.end(), "SaveRequest: array '{}' appears twice", dup == names.end() ? "" : *dup);
}

void check_json(const std::string& text, const char* which) {
  DGR_CHECK_AS(CheckpointError, json::accept(text), "SaveRequest.{} is not valid JSON: {:.200}", which, text);
}

// Writes one HDF5 file of a checkpoint, then fsyncs it while computing its sha256 (from the page cache).
FileRecord write_hdf5(const std::string& dir, const std::string& name, const std::vector<NamedArray>& arrays,
                      const std::function<void(data::h5::File&)>& set_attrs, const StoreOptions& options) {
  const std::string path = dir + "/" + name;
  double t_start = now_s();
  if (options.test_hook) options.test_hook(path, "");
  data::h5::File file = data::h5::File::create(path);
  set_attrs(file);
  data::h5::WriteOptions write_options;
  write_options.chunk_bytes = options.chunk_bytes;
  for (const auto& a : arrays) {
    if (options.test_hook) options.test_hook(path, a.name);
    file.write_array(a, write_options);
  }
  double t_written = now_s();
  file.close();
  double t_closed = now_s();
  auto synced = std::async(std::launch::async, [&path] { data::h5::fsync_path(path); });
  FileRecord record;
  record.name = name;
  try {
    record.sha256 = files::sha256_file(path);
    record.bytes = fs::file_size(path);
  } catch (...) {
    synced.wait();
    throw;
  }
  double t_hashed = now_s();
  synced.get();
  logger()->debug("wrote {} bytes={} hdf5_s={:.3f} close_s={:.3f} sha256_s={:.3f} fsync_wait_s={:.3f}", path,
                  record.bytes, t_written - t_start, t_closed - t_written, t_hashed - t_closed, now_s() - t_hashed);
  return record;
}

void set_common_attrs(data::h5::File& file, const char* kind, int64_t step, int world_size) {
  file.set_string_attr("dgr_format", kCheckpointFormat);
  file.set_int_attr("format_version", kFormatVersion);
  file.set_string_attr("dgr_version", layout::dgr_version());
  file.set_string_attr("kind", kind);
  file.set_int_attr("step", step);
  file.set_int_attr("world_size", world_size);
}

}  // namespace

struct Store::Impl {
  StoreOptions options;
  int rank = 0;
  int world_size = 1;
  // The store's own host communicator (its MPI_COMM_WORLD duplicate: our collectives never meet anyone
  // else's), used by the training thread only; the writer thread never communicates.
  std::unique_ptr<comm::Communicator> control;

  // One save between save() and its commit. The writer thread fills `error` and `files`; the training
  // thread reads them only after join().
  struct Pending {
    int64_t step = 0;
    std::string tmp_dir;
    std::string final_dir;
    SaveRequest request;
    std::thread writer;
    std::string error;
    std::vector<FileRecord> files;
    double started_s = 0;
    double written_s = 0;
    std::atomic<bool> written{false};  // set by the writer as its last action
    // Note [Overlapped copy]: set (under copy_mutex) once the writer no longer reads the sources.
    std::mutex copy_mutex;
    std::condition_variable copy_done;
    bool copied = false;
  };
  std::unique_ptr<Pending> pending;
  StagingPool staging;  // host buffers of the last written save, for the next one's copies
  std::thread janitor;  // rank 0: removes pruned steps in the background (see prune)
  static constexpr const char* kTrashPrefix = ".deleting.";

  // ---- collectives (training thread only) ----

  // Collective, the agreement of Note [Commit protocol]: every rank's `mine` goes to rank 0, which calls
  // `decide` with all of them ([rank]); every rank returns rank 0's decision. A deadline that passes ends
  // in a CommError naming `what` and the ranks that did not arrive.
  std::string agree(const std::string& mine, const std::function<std::string(const std::vector<std::string>&)>& decide,
                    const std::string& what) {
    try {
      std::vector<std::string> all = control->gather_bytes(mine, 0);
      std::string decision = rank == 0 ? decide(all) : std::string();
      control->broadcast_bytes(decision, 0);
      return decision;
    } catch (const CommError& e) {
      throw CommError(fmt::format("checkpoint store, {}: {}", what, e.what()));
    }
  }

  // Collective: rank 0's `message` on every rank (CommError as agree).
  std::string from_root(std::string message, const std::string& what) {
    try {
      control->broadcast_bytes(message, 0);
      return message;
    } catch (const CommError& e) {
      throw CommError(fmt::format("checkpoint store, {}: {}", what, e.what()));
    }
  }

  std::string last_committed_text() const {
    std::vector<int64_t> steps = committed_steps(options.dir);
    if (steps.empty()) return "no earlier checkpoint was committed";
    return fmt::format("the last committed checkpoint {} is intact",
                       (fs::path(options.dir) / step_dir_name(steps.back())).string());
  }

  // ---- save ----

  void start(SaveRequest&& request) {
    std::string local_error;
    try {
      DGR_CHECK_AS(CheckpointError, request.step >= 0, "SaveRequest.step is {}, must be >= 0", request.step);
      if (rank == 0) {
        check_request_arrays(request.replicated, "replicated");
        check_request_sources(request.replicated_sources, request.replicated);
        check_json(request.config_json, "config_json");
        check_json(request.state_json, "state_json");
      } else {
        std::vector<NamedArray>().swap(request.replicated);  // only rank 0's are written
        request.replicated_sources.clear();
      }
      check_request_arrays(request.per_rank, "per_rank");
      check_json(request.rank_state_json, "rank_state_json");
    } catch (const std::exception& e) {
      local_error = e.what();
    }
    const std::string final_dir = (fs::path(options.dir) / step_dir_name(request.step)).string();
    const std::string tmp_dir = final_dir + layout::kTmpSuffix;
    if (rank == 0 && local_error.empty()) {
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);  // left over by a run that stopped while writing this step
      if (!ec) fs::create_directory(tmp_dir, ec);
      if (ec) {
        local_error = fmt::format("cannot create {}: {} (is {} a writable directory with free space?)", tmp_dir,
                                  ec.message(), options.dir);
      }
    }
    json mine = {{"error", local_error}, {"step", request.step}};
    const std::string error = agree(mine.dump(), [&](const std::vector<std::string>& all) {
      std::vector<std::string> problems;
      for (int r = 0; r < world_size; ++r) {
        json theirs = json::parse(all[r]);
        if (!theirs["error"].get<std::string>().empty()) {
          problems.push_back(fmt::format("rank {}: {}", r, theirs["error"].get<std::string>()));
        } else if (theirs["step"].get<int64_t>() != request.step) {
          problems.push_back(fmt::format("rank {} saves step {} while rank 0 saves step {} (every rank must call "
                                         "save() at the same step)", r, theirs["step"].get<int64_t>(), request.step));
        }
      }
      if (problems.empty()) return std::string();
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);
      return fmt::format("checkpoint step {} was not started: {}; {}", request.step, fmt::join(problems, "; "),
                         last_committed_text());
    }, fmt::format("start of step {}", request.step));
    DGR_CHECK_AS(CheckpointError, error.empty(), "{}", error);

    pending = std::make_unique<Pending>();
    Pending& p = *pending;
    p.step = request.step;
    p.tmp_dir = tmp_dir;
    p.final_dir = final_dir;
    p.request = std::move(request);
    p.started_s = now_s();
    try {
      p.writer = std::thread([this, &p] { write_part(p); });
    } catch (const std::system_error& e) {  // no thread to be had: write now, so every rank stays in step
      logger()->warn("cannot start the checkpoint writer thread ({}): writing step {} synchronously", e.what(), p.step);
      write_part(p);
    }
  }

  // Writer thread: this rank's files. Never calls MPI. In async mode it runs at a lower priority (nice +10,
  // this thread only), so on a busy host the training threads keep their cores and the write takes the rest.
  void write_part(Pending& p) {
    copy_sources(p);
    if (options.async) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
    try {
      DGR_CHECK_AS(CheckpointError, p.error.empty(), "{}", p.error);
      if (rank == 0) {
        p.files.push_back(write_hdf5(p.tmp_dir, layout::kModelFile, p.request.replicated, [&](data::h5::File& file) {
          set_common_attrs(file, "replicated", p.step, world_size);
        }, options));
      }
      p.files.push_back(write_hdf5(p.tmp_dir, layout::rank_file_name(rank), p.request.per_rank, [&](data::h5::File& file) {
        set_common_attrs(file, "rank", p.step, world_size);
        file.set_int_attr("rank", rank);
        file.set_string_attr("rank_state_json", p.request.rank_state_json);
      }, options));
    } catch (const std::exception& e) {
      p.error = e.what();
    } catch (...) {
      p.error = "unknown exception in the checkpoint writer";
    }
    // The host copies are written: their buffers go back to the pool for the next save's copies.
    std::vector<NamedArray> done = std::move(p.request.replicated);
    for (auto& a : p.request.per_rank) done.push_back(std::move(a));
    std::vector<NamedArray>().swap(p.request.per_rank);
    staging.give_back(std::move(done));
    p.written_s = now_s();
    p.written = true;
  }

  // Writer thread, first: Note [Overlapped copy]. Releases the sources whatever happens.
  void copy_sources(Pending& p) {
    try {
      for (const auto& source : p.request.replicated_sources) {
        p.request.replicated.push_back(staging.copy_of(source.name, source.shape, source.dtype, source.data));
      }
    } catch (const std::exception& e) {
      p.error = fmt::format("copying the arrays to write: {}", e.what());
    } catch (...) {
      p.error = "copying the arrays to write: unknown exception";
    }
    p.request.replicated_sources.clear();
    {
      std::lock_guard<std::mutex> lock(p.copy_mutex);
      p.copied = true;
    }
    p.copy_done.notify_all();
  }

  // Local: Store::wait_for_copies().
  void wait_for_copies() {
    if (!pending) return;
    Pending& p = *pending;
    std::unique_lock<std::mutex> lock(p.copy_mutex);
    p.copy_done.wait(lock, [&p] { return p.copied; });
  }

  // Collective: steps 4-5 of Note [Commit protocol].
  void finish() {
    if (!pending) return;
    std::unique_ptr<Pending> owned = std::move(pending);
    Pending& p = *owned;
    if (p.writer.joinable()) p.writer.join();
    json mine = {{"error", p.error}, {"files", json::array()}};
    for (const auto& f : p.files) mine["files"].push_back({{"name", f.name}, {"bytes", f.bytes}, {"sha256", f.sha256}});
    const std::string error = agree(mine.dump(), [&](const std::vector<std::string>& all) {
      std::vector<std::string> problems;
      json files = json::array();
      for (int r = 0; r < world_size; ++r) {
        json theirs = json::parse(all[r]);
        if (!theirs["error"].get<std::string>().empty()) {
          problems.push_back(fmt::format("rank {}: {}", r, theirs["error"].get<std::string>()));
        }
        for (auto& f : theirs["files"]) files.push_back(f);
      }
      if (problems.empty()) {
        try {
          commit(p, files);
        } catch (const std::exception& e) {
          problems.push_back(fmt::format("rank 0: commit failed: {}", e.what()));
        }
      }
      if (problems.empty()) return std::string();
      std::error_code ec;
      fs::remove_all(p.tmp_dir, ec);
      std::string outcome = fmt::format("checkpoint step {} could not be written: {}; {}. Fix the cause (free disk "
                                        "space, a writable checkpoint directory) and resume from it", p.step,
                                        fmt::join(problems, "; "), last_committed_text());
      logger()->error("{}", outcome);
      return outcome;
    }, fmt::format("commit of step {}", p.step));
    DGR_CHECK_AS(CheckpointError, error.empty(), "{}", error);
  }

  // Rank 0: meta.json, COMMITTED, rename into place, prune.
  void commit(const Pending& p, const json& files) {
    double commit_start = now_s();
    json meta = {
        {"dgr_format", kCheckpointFormat},
        {"format_version", kFormatVersion},
        {"dgr_version", layout::dgr_version()},
        {"step", p.step},
        {"world_size", world_size},
        {"created_utc", utc_now()},
        {"config", json::parse(p.request.config_json)},
        {"state", json::parse(p.request.state_json)},
        {"files", files},
    };
    const std::string meta_path = p.tmp_dir + "/" + layout::kMetaFile;
    {
      files::AtomicFile out(meta_path);
      out.write(meta.dump(2) + "\n");
      out.commit();
    }
    json marker = {{"dgr_format", kCheckpointFormat}, {"format_version", kFormatVersion}, {"step", p.step},
                   {"meta_sha256", files::sha256_file(meta_path)}};
    {
      files::AtomicFile out(p.tmp_dir + "/" + layout::kMarkerFile);
      out.write(marker.dump() + "\n");
      out.commit();
    }
    data::h5::fsync_path(p.tmp_dir);
    // A step saved again (e.g. after a resume) replaces the old directory: moved aside, pruned below.
    const std::string old_dir = p.final_dir + layout::kOldSuffix;
    bool moved_old = false;
    if (fs::exists(p.final_dir)) {
      fs::remove_all(old_dir);
      fs::rename(p.final_dir, old_dir);
      moved_old = true;
    }
    try {
      fs::rename(p.tmp_dir, p.final_dir);
    } catch (...) {
      std::error_code ec;
      if (moved_old) fs::rename(old_dir, p.final_dir, ec);
      throw;
    }
    data::h5::fsync_path(options.dir);  // the old directory, if any, goes with the pruning below
    uint64_t file_bytes = 0;
    for (const auto& f : files) file_bytes += f["bytes"].get<uint64_t>();
    logger()->info("checkpoint step={} committed dir={} file_bytes={} write_s={:.3f} wait_s={:.3f} commit_s={:.3f}",
                   p.step, p.final_dir, file_bytes, p.written_s - p.started_s, commit_start - p.written_s,
                   now_s() - commit_start);
    prune(p.step);
  }

  // Rank 0, after a commit: keeps the newest `keep_last` committed steps (never `just_committed`) and
  // removes leftovers of interrupted saves (step-*.tmp, step-*.old). Each victim is first renamed to
  // DIR/.deleting.<name> (instant, and no step directory can ever have that name); removing the files
  // (~0.1 s per 256 MiB) is left to a background thread, so a commit does not wait for it and nothing races
  // with the next save's step-N.tmp/. Failures only warn.
  void prune(int64_t just_committed) {
    std::vector<fs::path> trash;
    try {
      std::vector<fs::path> victims;
      std::vector<int64_t> steps = committed_steps(options.dir);
      if (options.keep_last > 0 && steps.size() > static_cast<size_t>(options.keep_last)) {
        size_t excess = steps.size() - static_cast<size_t>(options.keep_last);
        for (size_t i = 0; i < excess; ++i) {
          if (steps[i] != just_committed) victims.push_back(fs::path(options.dir) / step_dir_name(steps[i]));
        }
      }
      for (const auto& entry : fs::directory_iterator(options.dir)) {
        std::string name = entry.path().filename().string();
        if (name.rfind(kTrashPrefix, 0) == 0) {
          trash.push_back(entry.path());  // left by a job that stopped while removing
        } else if (layout::parse_step_dir_name(name, layout::kTmpSuffix) ||
                   layout::parse_step_dir_name(name, layout::kOldSuffix)) {
          victims.push_back(entry.path());
        }
      }
      for (const fs::path& victim : victims) {
        fs::path target = fs::path(options.dir) / (kTrashPrefix + victim.filename().string());
        fs::remove_all(target);
        fs::rename(victim, target);
        trash.push_back(target);
        logger()->debug("removing {} (keep_last={}, or left over by an interrupted save)", victim.string(),
                        options.keep_last);
      }
    } catch (const std::exception& e) {
      logger()->warn("pruning old checkpoints in {} failed: {} (remove them by hand)", options.dir, e.what());
    }
    if (trash.empty()) return;
    auto remove = [](const std::vector<fs::path>& paths) {
      for (const fs::path& path : paths) {
        std::error_code ec;
        fs::remove_all(path, ec);
        if (ec) logger()->warn("cannot remove {}: {} (remove it by hand)", path.string(), ec.message());
      }
    };
    join_janitor();
    try {
      janitor = std::thread(remove, trash);
    } catch (const std::system_error&) {
      remove(trash);  // no thread to be had: remove now
    }
  }

  void join_janitor() {
    if (janitor.joinable()) janitor.join();
  }

  // ---- load ----

  std::optional<LoadedCheckpoint> load_latest() {
    finish();
    json listing;
    if (rank == 0) {
      try {
        listing = {{"steps", committed_steps(options.dir)}, {"error", ""}};
        note_incomplete(listing["steps"].empty() ? -1 : listing["steps"].back().get<int64_t>());
      } catch (const std::exception& e) {
        listing = {{"steps", json::array()}, {"error", fmt::format("cannot list {}: {}", options.dir, e.what())}};
      }
    }
    listing = json::parse(from_root(rank == 0 ? listing.dump() : "", "listing of the committed steps"));
    DGR_CHECK_AS(CheckpointError, listing["error"].get<std::string>().empty(), "{}", listing["error"].get<std::string>());
    std::vector<int64_t> steps = listing["steps"].get<std::vector<int64_t>>();
    std::vector<std::string> damaged;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      const std::string dir = (fs::path(options.dir) / step_dir_name(*it)).string();
      std::optional<LoadedCheckpoint> loaded;
      json status = {{"state", "ok"}, {"error", ""}};
      try {
        loaded = load_step(dir, rank, world_size, /*model_only_on_other_world_size=*/true);
      } catch (const DamagedCheckpointError& e) {
        status = {{"state", "damaged"}, {"error", e.what()}};
      } catch (const std::exception& e) {
        status = {{"state", "fatal"}, {"error", e.what()}};
      }
      json decision = json::parse(agree(status.dump(), [&](const std::vector<std::string>& all) {
        json outcome = {{"state", "ok"}, {"error", ""}};
        std::vector<std::string> problems;
        for (int r = 0; r < world_size; ++r) {
          json theirs = json::parse(all[r]);
          std::string state = theirs["state"];
          if (state == "ok") continue;
          problems.push_back(world_size > 1 ? fmt::format("rank {}: {}", r, theirs["error"].get<std::string>())
                                            : theirs["error"].get<std::string>());
          if (state == "fatal" || outcome["state"] == "ok") outcome["state"] = state;
        }
        outcome["error"] = fmt::format("{}", fmt::join(problems, "; "));
        return outcome.dump();
      }, fmt::format("load of {}", dir)));
      if (decision["state"] == "ok") {
        logger()->info("resuming from {} (step {}, written by dgr {} with {} ranks)", dir, loaded->step,
                       loaded->dgr_version, loaded->world_size);
        return loaded;
      }
      DGR_CHECK_AS(CheckpointError, decision["state"] != "fatal", "{}", decision["error"].get<std::string>());
      if (rank == 0) {
        logger()->warn("skipping damaged checkpoint {}: {}; trying the previous committed one", dir,
                       decision["error"].get<std::string>());
      }
      damaged.push_back(step_dir_name(*it));
    }
    if (steps.empty()) {
      if (rank == 0) logger()->info("no committed checkpoint in {}: starting from scratch", options.dir);
      return std::nullopt;
    }
    throw CheckpointError(fmt::format(
        "every committed checkpoint in {} is damaged ({}; see the warnings above): restore one from a copy, or "
        "delete them (or choose another checkpoint directory) to start from scratch", options.dir,
        fmt::join(damaged, ", ")));
  }

  // Rank 0: says which step directories newer than the newest committed one are ignored, and why.
  void note_incomplete(int64_t newest_committed) {
    if (!fs::is_directory(options.dir)) return;
    for (const auto& entry : fs::directory_iterator(options.dir)) {
      std::string name = entry.path().filename().string();
      std::optional<int64_t> step = layout::parse_step_dir_name(name);
      std::optional<int64_t> tmp_step = layout::parse_step_dir_name(name, layout::kTmpSuffix);
      if (step && *step > newest_committed && !fs::exists(entry.path() / layout::kMarkerFile)) {
        logger()->warn("ignoring {}: no {} marker (it was never committed)", entry.path().string(), layout::kMarkerFile);
      } else if (tmp_step && *tmp_step > newest_committed) {
        logger()->warn("ignoring {}: a save that never finished", entry.path().string());
      }
    }
  }
};

Store::Store(StoreOptions options, const World& world) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = std::move(options);
  s.rank = world.rank();
  s.world_size = world.size();
  s.control = comm::make_host_communicator(world, s.options.timeout_ms);
  std::string error;
  if (s.options.dir.empty()) error = "the checkpoint directory is empty (set one)";
  if (s.options.keep_last < 0) error = fmt::format("keep_last is {}, must be >= 0 (0 keeps all)", s.options.keep_last);
  if (s.rank == 0 && error.empty()) {
    std::error_code ec;
    fs::create_directories(s.options.dir, ec);
    if (ec || !fs::is_directory(s.options.dir)) {
      error = fmt::format("cannot create the checkpoint directory {}: {} (is the path, or a part of it, a file? "
                          "is it writable?)", s.options.dir, ec ? ec.message() : "it exists and is not a directory");
    }
  }
  error = s.from_root(error, "set-up");
  if (!error.empty()) {
    s.control.reset();  // every rank is here: freed collectively, not leaked by the unwinding below
    DGR_CHECK_AS(CheckpointError, false, "{}", error);
  }
}

Store::~Store() {
  impl_->join_janitor();
  if (impl_->pending) {
    if (impl_->pending->writer.joinable()) impl_->pending->writer.join();
    logger()->warn("checkpoint step {} was written but never committed (Store::wait() was not called); it stays "
                   "in {} and is ignored on resume", impl_->pending->step, impl_->pending->tmp_dir);
  }
}

void Store::save(SaveRequest&& request) {
  impl_->finish();
  impl_->start(std::move(request));
  if (!impl_->options.async) impl_->finish();
}

void Store::wait() { impl_->finish(); }

void Store::wait_for_copies() { impl_->wait_for_copies(); }

bool Store::pending() const { return impl_->pending != nullptr; }

bool Store::writing() const { return impl_->pending != nullptr && !impl_->pending->written; }

std::optional<LoadedCheckpoint> Store::load_latest() { return impl_->load_latest(); }

const StoreOptions& Store::options() const { return impl_->options; }

StagingPool& Store::staging() { return impl_->staging; }

bool Store::writes_replicated() const { return impl_->rank == 0; }

}  // namespace dgr::checkpoints
