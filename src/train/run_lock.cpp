#include "agenttune/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// What the holder wrote, for the error message; the lock itself is the flock, not this text.
std::string read_holder(int fd) {
  std::string text(512, '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text.empty() ? "an unknown process" : text;
}

}  // namespace

RunLock::RunLock(const std::filesystem::path& output_dir) : path_(output_dir / ".agenttune.lock") {
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  if (ec) fail("{}: cannot create the output folder: {}", output_dir.string(), ec.message());
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open the run lock: {}", path_.string(), std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("{}: another training run is using this output folder ({}); wait for it, stop it, or choose "
           "another output_dir",
           output_dir.string(), holder);
    fail("{}: cannot lock: {}", path_.string(), std::strerror(err));
  }
  // We hold it: whatever the file says is a dead run's (stale); replace it with us.
  const auto started = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  const std::string me = fmt::format("host {} pid {} (started at unix time {})\n", host_name(), ::getpid(), started);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    log::warn("{}: cannot record the holder: {}", path_.string(), std::strerror(errno));
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the file stays (removing it would race a waiter)
}

}  // namespace agenttune
