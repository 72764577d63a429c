// Output that never looks complete when it is not: files and directories are written under a temporary
// name and renamed into place only on commit(); anything not committed is removed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace dgr::files {

// A file written as PATH.tmp.<pid> and renamed to PATH by commit() (after fflush + fsync).
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::FILE* handle() { return file_; }
  void write(const std::string& bytes);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
};

// A directory built as DIR.tmp.<pid> and renamed to DIR by commit(). An existing DIR is replaced only
// when `replace` is set (it is moved aside first and removed after the rename).
class AtomicDir {
 public:
  AtomicDir(std::string dir, bool replace);
  ~AtomicDir();  // removes the temporary directory unless committed
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& tmp_dir() const { return tmp_dir_; }  // write the files here
  void commit();

 private:
  std::string dir_;
  std::string tmp_dir_;
  bool replace_ = false;
  bool committed_ = false;
};

// An append-only file whose writes become durable at sync(): the growing files of resumable steps (the mined
// directory, the retrieval journal). open() cuts the file to `size` bytes first (0: created or emptied).
class AppendFile {
 public:
  AppendFile() = default;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile() { close(); }
  void open(const std::string& path, uint64_t size);
  void write(const void* data, size_t size);
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  void sync();  // fflush + fsync; SystemError naming the file
  void close();
  uint64_t bytes() const { return bytes_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t bytes_ = 0;
};

// Reads a whole file (throws DataError naming the path when it cannot).
std::string read_all(const std::string& path);

// SHA-256 of a file's bytes, as lower-case hex.
std::string sha256_file(const std::string& path);
// MD5 of bytes, raw 16 bytes.
std::string md5_raw(const std::string& bytes);
std::string md5_hex(const std::string& bytes);

}  // namespace dgr::files
