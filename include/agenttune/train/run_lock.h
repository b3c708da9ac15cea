#pragma once
// One trainer per output folder. Two runs writing the same checkpoints and metrics.jsonl destroy
// each other's files, so the trainer holds an exclusive lock on OUTPUT_DIR/.agenttune.lock for
// its lifetime. The lock is flock(2): the kernel drops it when the holder dies, however it dies,
// so a stale lock file from a killed run never blocks the next one. The file names the holder
// (host, pid, start time) for the error the second run prints.
#include <filesystem>
#include <string>

namespace agenttune {

class RunLock {
 public:
  // Takes the lock or fails (agenttune::Error) naming the folder and the holder.
  explicit RunLock(const std::filesystem::path& output_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace agenttune
