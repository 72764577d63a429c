// The record journal of record_journal.h.
#include "data/record_journal.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"

namespace fs = std::filesystem;

namespace dgr::data {

RecordJournal::RecordJournal(std::string path, const std::string& fingerprint_json)
    : path_(std::move(path)), fingerprint_(nlohmann::json::parse(fingerprint_json).dump()) {
  const std::string resume_path = path_ + ".resume.json";
  std::error_code ec;
  uint64_t keep = 0;
  if (fs::exists(resume_path, ec) && fs::exists(path_, ec)) {
    const auto resume = nlohmann::json::parse(files::read_all(resume_path), nullptr, /*allow_exceptions=*/false);
    if (resume.is_object() && resume.contains("fingerprint") && resume["fingerprint"].dump() == fingerprint_ &&
        resume.value("bytes", uint64_t{0}) <= fs::file_size(path_)) {
      keep = resume.value("bytes", uint64_t{0});
      const std::string bytes = files::read_all(path_).substr(0, keep);
      for (size_t at = 0; at < bytes.size();) {
        uint64_t length = 0;
        DGR_CHECK_AS(DataError, at + sizeof length <= bytes.size(), "{}: a record is cut short: remove it and its "
                     ".resume.json to start over", path_);
        std::memcpy(&length, bytes.data() + at, sizeof length);
        at += sizeof length;
        DGR_CHECK_AS(DataError, at + length <= bytes.size(), "{}: a record is cut short: remove it and its .resume.json "
                     "to start over", path_);
        resumed_.push_back(bytes.substr(at, length));
        at += length;
      }
      DGR_CHECK_AS(DataError, resumed_.size() == resume.value("records", uint64_t{0}), "{}: {} records, {} says {}: "
                   "remove both to start over", path_, resumed_.size(), resume_path, resume.value("records", uint64_t{0}));
    } else {
      restarted_ = true;
    }
  }
  if (keep == 0) {
    std::FILE* created = std::fopen(path_.c_str(), "wb");
    DGR_CHECK_AS(SystemError, created != nullptr, "cannot create {}: {}", path_, std::strerror(errno));
    std::fclose(created);
  }
  DGR_CHECK_AS(SystemError, ::truncate(path_.c_str(), static_cast<off_t>(keep)) == 0, "cannot cut {} to {} bytes: {}",
               path_, keep, std::strerror(errno));
  file_ = std::fopen(path_.c_str(), "ab");
  DGR_CHECK_AS(SystemError, file_ != nullptr, "cannot open {}: {}", path_, std::strerror(errno));
  records_ = resumed_.size();
  bytes_ = keep;
  if (keep == 0) checkpoint();
}

RecordJournal::~RecordJournal() {
  if (file_ != nullptr) std::fclose(file_);
}

void RecordJournal::append(const std::string& record) {
  const uint64_t length = record.size();
  DGR_CHECK_AS(SystemError, std::fwrite(&length, sizeof length, 1, file_) == 1 &&
               std::fwrite(record.data(), 1, record.size(), file_) == record.size(), "cannot write {}: {}", path_,
               std::strerror(errno));
  ++records_;
  bytes_ += sizeof length + record.size();
}

void RecordJournal::checkpoint() {
  DGR_CHECK_AS(SystemError, std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0, "cannot flush {}: {}", path_,
               std::strerror(errno));
  files::AtomicFile resume(path_ + ".resume.json");
  resume.write(nlohmann::json{{"fingerprint", nlohmann::json::parse(fingerprint_)}, {"records", records_},
                              {"bytes", bytes_}}.dump(2) + "\n");
  resume.commit();
}

void RecordJournal::remove() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  fs::remove(path_ + ".resume.json", ec);
  fs::remove(path_, ec);
}

}  // namespace dgr::data
