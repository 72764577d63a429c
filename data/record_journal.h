// An append-only journal of length-prefixed records that survives a kill (issue 21, Build 3: resumable steps):
// PATH holds [uint64 length][bytes] records, PATH.resume.json how many are durable (fsync'ed) and the
// fingerprint of the run that wrote them. `dgr retrieve` journals each query's result so that a stopped or
// killed retrieval continues with the next query (Note [Resumable retrieval] in launcher/commands_train.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/files.h"

namespace dgr::data {

class RecordJournal {
 public:
  // Continues PATH when PATH.resume.json holds the same fingerprint (a JSON text; the durable records are read
  // back into resumed() and anything after them cut off); otherwise starts it empty (`restarted()` says whether
  // a journal of another run was there and was dropped).
  RecordJournal(std::string path, const std::string& fingerprint_json);
  RecordJournal(const RecordJournal&) = delete;
  RecordJournal& operator=(const RecordJournal&) = delete;

  const std::vector<std::string>& resumed() const { return resumed_; }
  bool restarted() const { return restarted_; }
  void append(const std::string& record);
  // Makes every appended record durable and records the count in PATH.resume.json.
  void checkpoint();
  // Removes PATH and PATH.resume.json (the outputs they fed are complete).
  void remove();

 private:
  std::string path_, fingerprint_;
  files::AppendFile file_;
  uint64_t records_ = 0;
  std::vector<std::string> resumed_;
  bool restarted_ = false;
};

}  // namespace dgr::data
