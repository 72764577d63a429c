// Fetching, locating and parsing the Debian package lists (deb822 stanzas).
#include "data/debian_lists.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <unordered_map>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/text.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

constexpr const char* kAptHelper = "/usr/lib/apt/apt-helper";

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out.push_back(c);
  }
  return out + "'";
}

// Runs a shell command and returns its stdout; throws DataError with `what_to_do` on a non-zero exit.
std::string run_capture(const std::string& command, int* exit_code) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw SystemError(fmt::format("cannot run '{}'", command));
  std::string out;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  int status = ::pclose(pipe);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return out;
}

// Decompresses (lz4, xz, gz, zst or plain) through apt's own helper; plain files are read directly when
// apt-helper is absent.
std::string cat_list_file(const std::string& path) {
  if (fs::exists(kAptHelper)) {
    int rc = 0;
    std::string out = run_capture(std::string(kAptHelper) + " cat-file " + shell_quote(path) + " 2>&1", &rc);
    if (rc != 0) {
      throw DataError(fmt::format("{}: apt-helper cat-file failed ({}): {}", path, rc,
                                  text::collapse_ws(out.substr(0, 300))));
    }
    return out;
  }
  DGR_CHECK_AS(DataError, path.find('.', path.rfind('/') + 1) == std::string::npos,
               "{}: compressed list but {} is missing (install the 'apt' package)", path, kAptHelper);
  return files::read_all(path);
}

// Calls `fn(fields)` for every deb822 stanza; continuation lines are appended to the field with '\n'.
template <typename Fn>
void for_each_stanza(const std::string& content, const std::string& path, Fn fn) {
  std::unordered_map<std::string, std::string> fields;
  std::string last_key;
  size_t pos = 0, line_no = 0;
  auto flush = [&] {
    if (!fields.empty()) fn(fields);
    fields.clear();
    last_key.clear();
  };
  while (pos <= content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + pos, end - pos);
    ++line_no;
    if (line.empty()) {
      flush();
    } else if (line[0] == ' ' || line[0] == '\t') {
      DGR_CHECK_AS(DataError, !last_key.empty(), "{}:{}: continuation line before any field (is this a "
                   "Debian Packages/Translation file?)", path, line_no);
      fields[last_key].append("\n").append(line);
    } else {
      size_t colon = line.find(':');
      DGR_CHECK_AS(DataError, colon != std::string_view::npos,
                   "{}:{}: expected 'Field: value' (is this a Debian Packages/Translation file?)", path, line_no);
      last_key = std::string(line.substr(0, colon));
      fields[last_key] = std::string(text::trim(line.substr(colon + 1)));
    }
    if (end == content.size()) break;
    pos = end + 1;
  }
  flush();
}

std::string read_release_date(const std::string& lists_dir, const std::string& prefix) {
  for (const char* name : {"InRelease", "Release"}) {
    fs::path p = fs::path(lists_dir) / (prefix + name);
    if (!fs::exists(p)) continue;
    std::string content = files::read_all(p.string());
    static const std::regex kDate("^Date: *(.*)$", std::regex::multiline);
    std::smatch m;
    if (std::regex_search(content, m, kDate)) return std::string(text::trim(m[1].str()));
  }
  return "unknown";
}

}  // namespace

void fetch_debian_lists(const std::string& lists_dir) {
  auto log = log::get("data");
  int rc = 0;
  run_capture("command -v apt-get >/dev/null 2>&1", &rc);
  if (rc != 0) {
    throw DataError("cannot fetch the Debian package lists: apt-get is not available on this machine "
                    "(build the data set on a Debian machine, or pass --lists-dir DIR with Packages and "
                    "Translation-en files, or point the later steps at a data set on disk with --data DIR)");
  }
  std::error_code ec;
  fs::create_directories(fs::path(lists_dir) / "partial", ec);
  if (ec) throw SystemError(fmt::format("cannot create {}: {}", lists_dir, ec.message()));
  log->info("fetching the Debian package lists with English descriptions into {} (system lists untouched)",
            lists_dir);
  std::string command = "apt-get update -qq -o Dir::State::Lists=" + shell_quote(fs::absolute(lists_dir).string()) +
                        " -o Acquire::Languages=en -o APT::Update::Error-Mode=any 2>&1";
  std::string out = run_capture(command, &rc);
  if (rc != 0) {
    throw DataError(fmt::format(
        "cannot fetch the Debian package lists (apt-get update exited {}: {}): no network or no Debian "
        "sources? Pass --lists-dir DIR with lists fetched elsewhere, or use a data set on disk with --data DIR",
        rc, text::collapse_ws(out.substr(0, 400))));
  }
}

DebianLists read_debian_lists(const std::string& lists_dir) {
  DGR_CHECK_AS(DataError, fs::is_directory(lists_dir), "{}: not a directory (pass the directory that holds "
               "the apt lists, or leave --lists-dir empty to fetch them)", lists_dir);
  // apt names files HOST_PATH_dists_SUITE_main_binary-ARCH_Packages[.lz4|.xz|.gz]; prefer the release
  // suite itself (no '-' in its name, so not -updates or -security).
  static const std::regex kPackages(R"((.*_dists_([^_]+)_)main_binary-[^_]+_Packages(\.[a-z0-9]+)?)");
  static const std::regex kTranslation(R"((.*_dists_([^_]+)_)main_i18n_Translation-en(\.[a-z0-9]+)?)");
  DebianLists lists;
  std::string packages_path, translation_path, prefix;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(lists_dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::smatch m;
    if (std::regex_match(name, m, kPackages)) {
      bool is_release = m[2].str().find('-') == std::string::npos;
      if (packages_path.empty() || (is_release && lists.suite.find('-') != std::string::npos)) {
        packages_path = (fs::path(lists_dir) / name).string();
        prefix = m[1].str();
        lists.suite = m[2].str();
      }
    }
  }
  for (const auto& name : names) {
    std::smatch m;
    if (std::regex_match(name, m, kTranslation) && m[2].str() == lists.suite) {
      translation_path = (fs::path(lists_dir) / name).string();
    }
  }
  if (packages_path.empty() && fs::exists(fs::path(lists_dir) / "Packages")) {
    packages_path = (fs::path(lists_dir) / "Packages").string();
    translation_path = (fs::path(lists_dir) / "Translation-en").string();
    lists.suite = "local";
  }
  DGR_CHECK_AS(DataError, !packages_path.empty(), "{}: no main/binary-*/Packages list found (fetch them "
               "with `dgr data build-debian` without --lists-dir, or copy /var/lib/apt/lists there)", lists_dir);
  DGR_CHECK_AS(DataError, !translation_path.empty() && fs::exists(translation_path),
               "{}: no main/i18n/Translation-en list for suite '{}' (fetch with -o Acquire::Languages=en)",
               lists_dir, lists.suite);
  lists.release_date = prefix.empty() ? "unknown" : read_release_date(lists_dir, prefix);
  lists.packages = {packages_path, files::sha256_file(packages_path)};
  lists.translation = {translation_path, files::sha256_file(translation_path)};

  std::unordered_map<std::string, std::string> long_by_md5;
  for_each_stanza(cat_list_file(translation_path), translation_path, [&](auto& fields) {
    auto md5 = fields.find("Description-md5");
    auto desc = fields.find("Description-en");
    if (md5 != fields.end() && desc != fields.end()) long_by_md5.emplace(md5->second, desc->second);
  });
  for_each_stanza(cat_list_file(packages_path), packages_path, [&](auto& fields) {
    auto pkg = fields.find("Package");
    if (pkg == fields.end()) return;
    BinaryPackage b;
    b.package = pkg->second;
    auto src = fields.find("Source");
    b.source = src == fields.end() ? b.package : std::string(text::split_ws(src->second).at(0));
    auto md5 = fields.find("Description-md5");
    if (md5 != fields.end()) b.description_md5 = md5->second;
    std::string full;
    auto it = long_by_md5.find(b.description_md5);
    if (it != long_by_md5.end()) {
      full = it->second;
    } else if (auto d = fields.find("Description"); d != fields.end()) {
      full = d->second;
    }
    size_t nl = full.find('\n');
    b.synopsis = std::string(text::trim(full.substr(0, nl)));
    b.long_description = nl == std::string::npos ? "" : full.substr(nl + 1);
    lists.binaries.push_back(std::move(b));
  });
  DGR_CHECK_AS(DataError, !lists.binaries.empty(), "{}: no packages parsed (empty or not a Packages file)",
               packages_path);
  return lists;
}

}  // namespace dgr::data
