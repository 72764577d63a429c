// Atomic output files and directories, whole-file reads and checksums.
#include "common/files.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fs = std::filesystem;

namespace dgr::files {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) {
    throw SystemError(fmt::format("cannot create {}: {} (does the directory exist and is it writable?)",
                                  tmp_path_, std::strerror(errno)));
  }
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void AtomicFile::write(const std::string& bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    throw SystemError(fmt::format("write to {} failed: {} (disk full?)", tmp_path_, std::strerror(errno)));
  }
}

void AtomicFile::commit() {
  DGR_CHECK(file_ != nullptr, "AtomicFile::commit called twice for {}", path_);
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    err = err ? err : errno;
    std::remove(tmp_path_.c_str());
    throw SystemError(fmt::format("cannot finish writing {}: {} (disk full or no permission?)", path_,
                                  std::strerror(err)));
  }
}

AtomicDir::AtomicDir(std::string dir, bool replace) : dir_(std::move(dir)), replace_(replace) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  if (fs::exists(dir_) && !replace_) {
    throw ConfigError(fmt::format("output directory {} already exists (pass --force to replace it)", dir_));
  }
  tmp_dir_ = dir_ + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_dir_, ec);
  fs::create_directories(tmp_dir_, ec);
  if (ec) throw SystemError(fmt::format("cannot create {}: {}", tmp_dir_, ec.message()));
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_dir_, ec);
  }
}

void AtomicDir::commit() {
  std::error_code ec;
  std::string old = dir_ + ".old." + std::to_string(::getpid());
  bool moved_old = false;
  if (fs::exists(dir_)) {
    fs::rename(dir_, old, ec);
    if (ec) throw SystemError(fmt::format("cannot move the old {} aside: {}", dir_, ec.message()));
    moved_old = true;
  }
  fs::rename(tmp_dir_, dir_, ec);
  if (ec) {
    if (moved_old) fs::rename(old, dir_, ec);
    throw SystemError(fmt::format("cannot rename {} to {}: {}", tmp_dir_, dir_, ec.message()));
  }
  committed_ = true;
  if (moved_old) fs::remove_all(old, ec);
}

void AppendFile::open(const std::string& path, uint64_t size) {
  close();
  path_ = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    std::FILE* created = std::fopen(path.c_str(), "wb");
    if (created == nullptr) throw SystemError(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
    std::fclose(created);
  }
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0)
    throw SystemError(fmt::format("cannot cut {} to {} bytes: {}", path, size, std::strerror(errno)));
  file_ = std::fopen(path.c_str(), "ab");
  if (file_ == nullptr) throw SystemError(fmt::format("cannot open {} for writing: {}", path, std::strerror(errno)));
  bytes_ = size;
}

void AppendFile::write(const void* data, size_t size) {
  if (std::fwrite(data, 1, size, file_) != size)
    throw SystemError(fmt::format("cannot write {}: {}", path_, std::strerror(errno)));
  bytes_ += size;
}

void AppendFile::sync() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    throw SystemError(fmt::format("cannot flush {}: {}", path_, std::strerror(errno)));
}

void AppendFile::close() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot open: {} (check the path)", path, std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

namespace {
std::string to_hex(const unsigned char* bytes, unsigned int length) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 15]);
  }
  return out;
}

struct DigestContext {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~DigestContext() { EVP_MD_CTX_free(ctx); }
};
}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot open for checksum: {}", path, std::strerror(errno)));
  DigestContext d;
  DGR_CHECK(d.ctx && EVP_DigestInit_ex(d.ctx, EVP_sha256(), nullptr) == 1, "EVP_DigestInit_ex failed");
  std::string buffer(1 << 20, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(d.ctx, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(d.ctx, digest, &length);
  return to_hex(digest, length);
}

std::string md5_raw(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  DGR_CHECK(EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_md5(), nullptr) == 1,
            "EVP_Digest(md5) failed");
  return std::string(reinterpret_cast<char*>(digest), length);
}

std::string md5_hex(const std::string& bytes) {
  std::string raw = md5_raw(bytes);
  return to_hex(reinterpret_cast<const unsigned char*>(raw.data()), static_cast<unsigned int>(raw.size()));
}

}  // namespace dgr::files
