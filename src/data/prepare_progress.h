#pragma once
// The live progress line of `prepare` on stderr: files, MB read of the total, tokens, MB/s and an
// ETA from the input bytes still to read. Redrawn in place on a terminal, a plain line every 30 s
// otherwise (logs), nothing when disabled.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "input_files.h"

namespace agenttune::data {

class PrepareProgress {
 public:
  PrepareProgress(const std::vector<InputFile>& files, bool enabled);
  // Reader side: bytes of the current file read so far, then the file finished.
  void set_file_bytes(uint64_t bytes) { current_.store(bytes, std::memory_order_relaxed); }
  void file_done(uint64_t bytes);
  // Writer side: redraws at most a few times a second.
  void update(int64_t tokens);
  void finish(int64_t tokens);

 private:
  void draw(int64_t tokens, bool last);
  bool enabled_, tty_;
  size_t files_total_;
  uint64_t bytes_total_;
  std::atomic<size_t> files_done_{0};
  std::atomic<uint64_t> done_bytes_{0}, current_{0};
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace agenttune::data
