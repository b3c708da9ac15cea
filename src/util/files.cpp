#include "agenttune/util/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "agenttune/util/error.h"

namespace agenttune {

std::shared_ptr<MappedFile> MappedFile::open(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path.string(), std::strerror(e));
  }
  size_t size = static_cast<size_t>(st.st_size);
  const std::byte* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: cannot mmap: {}", path.string(), std::strerror(e));
    }
    data = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping keeps the file referenced
  return std::shared_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("{}: is a folder, expected a file", path.string());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems refuse directory fds
  ::fsync(fd);
  ::close(fd);
}

void rename_file(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail("{}: cannot rename to {}: {}", from.string(), to.string(), ec.message());
}

void create_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the folder: {}", dir.string(), ec.message());
}

void remove_file(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) fail("{}: cannot remove: {}", path.string(), ec.message());
}

namespace {

// Writes all of `data`, retrying short writes and EINTR: 0, or the errno of the write that failed.
int write_fully(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace

AppendFile::AppendFile(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int e = errno;
    fail("{}: cannot open for appending: {}", path.string(), std::strerror(e));
  }
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::flush() {
  const int e = write_fully(fd_, pending_);
  // Dropped even on failure: retrying a half-written row would glue its tail onto the next.
  pending_.clear();
  if (e != 0) fail("{}: write failed: {}", path_.string(), std::strerror(e));
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;  // tmp.string() below may allocate, and so touch errno first
    fail("{}: cannot create: {}", tmp.string(), std::strerror(e));
  }
  // On any failure the temporary goes (best effort: the error being reported matters more).
  auto give_up = [&tmp](const char* what, int err) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    fail("{}: {}: {}", tmp.string(), what, std::strerror(err));
  };
  if (int e = write_fully(fd, contents); e != 0) {
    ::close(fd);
    give_up("write failed", e);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    give_up("fsync failed", e);
  }
  if (::close(fd) != 0) give_up("close failed", errno);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    fail("{}: cannot replace it with {}: {}", path.string(), tmp.string(), ec.message());
  }
  fsync_dir(path.has_parent_path() ? path.parent_path() : fs::path("."));
}

}  // namespace agenttune
