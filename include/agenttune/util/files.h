#pragma once
// File helpers shared by every area: read-only memory maps and crash-safe writes.
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace agenttune {

namespace fs = std::filesystem;

// A read-only mapping of a whole file. Tensors borrow from it (zero copy) and keep it alive
// through a shared_ptr, so the map lives exactly as long as its last view.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const fs::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const fs::path& path() const { return path_; }

 private:
  MappedFile(fs::path path, const std::byte* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  fs::path path_;
  const std::byte* data_;
  size_t size_;
};

std::string read_text_file(const fs::path& path);

// Writes to `path.tmp.<pid>`, fsyncs, then renames over `path`: a crash leaves either the old
// file or the new one, never a torn one.
void write_file_atomic(const fs::path& path, std::string_view contents);

// A file written at its end through a descriptor, for logs a run appends to (metrics.jsonl,
// TensorBoard events). Writes are buffered until flush(); every failure names the file and the
// errno of the failing call itself (a std::ofstream reports failure only as a state bit, and errno
// read later is whatever some other call left: "Inappropriate ioctl for device" from an isatty()).
class AppendFile {
 public:
  // Opens `path` for appending, creating it if absent.
  explicit AppendFile(const fs::path& path);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  void append(std::string_view data) { pending_.append(data); }
  // Writes everything appended so far; throws "PATH: write failed: REASON".
  void flush();
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  std::string pending_;
};

// std::filesystem calls that fail with agenttune::fail naming the paths and the OS's reason,
// instead of throwing a raw filesystem_error (exit 3).
void rename_file(const fs::path& from, const fs::path& to);
void create_dirs(const fs::path& dir);
void remove_file(const fs::path& path);  // absent is fine

// fsync a directory so a rename inside it survives a power cut.
void fsync_dir(const fs::path& dir);

}  // namespace agenttune
