#include "prepare_progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace agenttune::data {

namespace {

std::string duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  const auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  return fmt::format("{}m{:02d}s", t / 60, t % 60);
}

}  // namespace

PrepareProgress::PrepareProgress(const std::vector<InputFile>& files, bool enabled)
    : enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1), files_total_(files.size()), bytes_total_(0) {
  for (const auto& f : files) bytes_total_ += f.bytes;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void PrepareProgress::file_done(uint64_t bytes) {
  done_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  current_.store(0, std::memory_order_relaxed);
  files_done_.fetch_add(1, std::memory_order_relaxed);
}

void PrepareProgress::update(int64_t tokens) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < (tty_ ? std::chrono::milliseconds(500) : std::chrono::milliseconds(30000))) return;
  last_draw_ = now;
  draw(tokens, false);
}

void PrepareProgress::finish(int64_t tokens) {
  if (enabled_) draw(tokens, true);
}

void PrepareProgress::draw(int64_t tokens, bool last) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const uint64_t bytes = last ? bytes_total_ : done_bytes_.load() + current_.load();
  const double mb = bytes / 1e6, rate = secs > 0 ? mb / secs : 0;
  const double eta = rate > 0 ? (bytes_total_ / 1e6 - mb) / rate : -1;
  const std::string line = fmt::format(
      "prepare: files {}/{}  {:.1f}/{:.1f} MB  {:.2f}M tokens  {:.1f} MB/s  {}", last ? files_total_ : files_done_.load(),
      files_total_, mb, bytes_total_ / 1e6, tokens / 1e6, rate, last ? "done in " + duration(secs) : "ETA " + duration(eta));
  std::fputs(tty_ ? ("\r" + line + "\x1b[K" + (last ? "\n" : "")).c_str() : (line + "\n").c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace agenttune::data
