#pragma once
// What a run reports: one JSON object per step in OUTPUT_DIR/metrics.jsonl, the same scalars as
// TensorBoard event files (OUTPUT_DIR/tb/events.out.tfevents.*, readable by `tensorboard
// --logdir`), and one live console line (step, loss, lr, tokens/s, MFU, ETA).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agenttune/util/files.h"

namespace agenttune {

// CRC-32C (Castagnoli), as TFRecord frames use it; `crc` continues an earlier call's result.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

// Minimal TensorBoard writer: TFRecord framing (length, masked CRC32C, payload, masked CRC32C)
// around hand-encoded Event protos carrying simple_value scalars. No protobuf dependency.
class TensorBoardWriter {
 public:
  // Creates logdir and a new events.out.tfevents.<unix seconds>.<hostname> file in it.
  explicit TensorBoardWriter(const std::filesystem::path& logdir);
  ~TensorBoardWriter();
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::filesystem::path& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class MetricsLogger {
 public:
  // Appends to metrics.jsonl and never rewrites it: a resumed run adds its rows after the killed
  // run's, so steps after the resumed checkpoint appear twice and the later row is the one the
  // final weights went through. Only a torn last line (a kill mid-write) is cut, as it is not a row.
  MetricsLogger(const std::filesystem::path& output_dir, bool tensorboard);
  // One step's scalars, in insertion order after "step"; written to JSONL (non-finite values as
  // null) and TensorBoard, and flushed so a live viewer or a crash sees whole lines.
  void log(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);
  void flush();

 private:
  AppendFile jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// The live console line, redrawn in place on a terminal (one line per update otherwise).
class ProgressLine {
 public:
  ProgressLine(int64_t total_steps, int64_t start_step, std::FILE* out = stderr);
  // Prints "step 120/1000 | loss 2.3456 | lr 3.00e-04 | 12.3k tok/s | MFU 41.2% | ETA 1h02m";
  // mfu is a fraction (0.412), left out when negative (peak FLOPs unknown). An evaluated step adds
  // "| val_loss 2.4567" after the loss, and on a terminal its line stays instead of being redrawn.
  void update(int64_t step, double loss, double lr, double tokens_per_s, double mfu,
              std::optional<double> val_loss = std::nullopt);
  void finish();
  static std::string format_line(int64_t step, int64_t total, double loss, double lr, double tokens_per_s,
                                 double mfu, double eta_seconds, std::optional<double> val_loss = std::nullopt);
  static std::string format_eta(double seconds);  // "1h02m", "4m05s", "12s", "2d03h", "?"

 private:
  int64_t total_, start_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point t0_;
  bool tty_;
  bool drawn_ = false;
};

}  // namespace agenttune
