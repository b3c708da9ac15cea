// metrics.jsonl and the console progress line.
#include "agenttune/train/metrics.h"

#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

// Cuts the file back to its last newline: what follows it is a line a killed run left half
// written, and appending after it would glue the next row onto the fragment.
void drop_torn_tail(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || size == 0) return;
  auto map = MappedFile::open(path);
  const auto* begin = reinterpret_cast<const char*>(map->data());
  size_t keep = size;
  while (keep > 0 && begin[keep - 1] != '\n') --keep;
  if (keep == size) return;
  map.reset();
  fs::resize_file(path, keep, ec);
  if (ec) fail("{}: cannot cut its torn last line: {}", path.string(), ec.message());
}

fs::path metrics_file(const fs::path& output_dir) {
  create_dirs(output_dir);
  fs::path path = output_dir / "metrics.jsonl";
  drop_torn_tail(path);
  return path;
}

}  // namespace

MetricsLogger::MetricsLogger(const fs::path& output_dir, bool tensorboard) : jsonl_(metrics_file(output_dir)) {
  if (tensorboard) tb_ = std::make_unique<TensorBoardWriter>(output_dir / "tb");
}

void MetricsLogger::log(int64_t step, const std::vector<std::pair<std::string, double>>& scalars) {
  nlohmann::ordered_json j;
  j["step"] = step;
  for (const auto& [k, v] : scalars) {
    if (std::isfinite(v))
      j[k] = v;
    else
      j[k] = nullptr;  // JSON has no NaN/inf; null keeps the key visible
    if (tb_) tb_->add_scalar(k, v, step);
  }
  jsonl_.append(j.dump() + '\n');
  flush();
}

void MetricsLogger::flush() {
  jsonl_.flush();
  if (tb_) tb_->flush();
}

ProgressLine::ProgressLine(int64_t total_steps, int64_t start_step, std::FILE* out)
    : total_(total_steps),
      start_(start_step),
      out_(out),
      t0_(std::chrono::steady_clock::now()),
      tty_(::isatty(::fileno(out)) != 0) {}

std::string ProgressLine::format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02d}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02d}h", s / 86400, s % 86400 / 3600);
}

std::string ProgressLine::format_line(int64_t step, int64_t total, double loss, double lr, double tokens_per_s,
                                      double mfu, double eta_seconds, std::optional<double> val_loss) {
  std::string tps = tokens_per_s >= 1e6   ? fmt::format("{:.2f}M", tokens_per_s / 1e6)
                    : tokens_per_s >= 1e3 ? fmt::format("{:.1f}k", tokens_per_s / 1e3)
                                          : fmt::format("{:.0f}", tokens_per_s);
  std::string line = fmt::format("step {}/{} | loss {:.4f}", step, total, loss);
  if (val_loss) line += fmt::format(" | val_loss {:.4f}", *val_loss);
  line += fmt::format(" | lr {:.2e} | {} tok/s", lr, tps);
  if (mfu >= 0) line += fmt::format(" | MFU {:.1f}%", mfu * 100);
  return line + " | ETA " + format_eta(eta_seconds);
}

void ProgressLine::update(int64_t step, double loss, double lr, double tokens_per_s, double mfu,
                          std::optional<double> val_loss) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  int64_t done = step - start_;
  double eta = done > 0 && elapsed > 0 ? elapsed / done * static_cast<double>(total_ - step) : -1;
  std::string line = format_line(step, total_, loss, lr, tokens_per_s, mfu, eta, val_loss);
  // \x1b[K clears what a longer previous line left to the right. An evaluation is rare and worth
  // keeping on screen: its line ends, and the next update draws below it.
  const bool keep = !tty_ || val_loss.has_value();
  if (tty_)
    std::fprintf(out_, "\r%s\x1b[K%s", line.c_str(), keep ? "\n" : "");
  else
    std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
  drawn_ = !keep;
}

void ProgressLine::finish() {
  if (drawn_) std::fputc('\n', out_);
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace agenttune
