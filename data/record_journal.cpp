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
  file_.open(path_, keep);
  records_ = resumed_.size();
  if (keep == 0) checkpoint();
}

void RecordJournal::append(const std::string& record) {
  const uint64_t length = record.size();
  file_.write(&length, sizeof length);
  file_.write(record);
  ++records_;
}

void RecordJournal::checkpoint() {
  file_.sync();
  files::AtomicFile resume(path_ + ".resume.json");
  resume.write(nlohmann::json{{"fingerprint", nlohmann::json::parse(fingerprint_)}, {"records", records_},
                              {"bytes", file_.bytes()}}.dump(2) + "\n");
  resume.commit();
}

void RecordJournal::remove() {
  file_.close();
  std::error_code ec;
  fs::remove(path_ + ".resume.json", ec);
  fs::remove(path_, ec);
}

}  // namespace dgr::data
