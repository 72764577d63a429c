// The Debian package lists behind the embedded data set: fetched into a private directory with apt (the
// system's lists and apt config stay untouched) or taken from a directory on disk, then parsed.
#pragma once

#include <string>
#include <vector>

namespace dgr::data {

struct BinaryPackage {
  std::string package;           // binary package name
  std::string source;            // source package name (the binary's own name when no Source field)
  std::string description_md5;   // key into Translation-en
  std::string synopsis;          // one-line description
  std::string long_description;  // raw extended description lines (Debian formatting), "" if none
};

struct ListFile {
  std::string path;
  std::string sha256;  // of the file as stored (usually compressed)
};

struct DebianLists {
  std::string release_date;      // "Date:" of the suite's InRelease/Release ("unknown" if absent)
  std::string suite;             // e.g. "bookworm"
  ListFile packages;             // main/binary-ARCH/Packages
  ListFile translation;          // main/i18n/Translation-en
  std::vector<BinaryPackage> binaries;  // [binary], Packages file order, long descriptions filled in
};

// Runs `apt-get update` with Dir::State::Lists=`lists_dir` and Acquire::Languages=en so that the English
// translations are fetched into that directory only. Throws DataError (with what to do instead) when apt
// is missing or the fetch fails.
void fetch_debian_lists(const std::string& lists_dir);

// Finds the suite's Packages and Translation-en files in `lists_dir` (apt's naming, any compression, or
// plain files named Packages and Translation-en), reads them through apt-helper and parses them.
DebianLists read_debian_lists(const std::string& lists_dir);

}  // namespace dgr::data
