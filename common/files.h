// Output that never looks complete when it is not: files and directories are written under a temporary
// name and renamed into place only on commit(); anything not committed is removed.
#pragma once

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

// Reads a whole file (throws DataError naming the path when it cannot).
std::string read_all(const std::string& path);

// SHA-256 of a file's bytes, as lower-case hex.
std::string sha256_file(const std::string& path);
// MD5 of bytes, raw 16 bytes.
std::string md5_raw(const std::string& bytes);
std::string md5_hex(const std::string& bytes);

}  // namespace dgr::files
