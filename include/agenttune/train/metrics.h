#pragma once
// What a run reports: one JSON object per step in OUTPUT_DIR/metrics.jsonl, the same scalars as
// TensorBoard event files (OUTPUT_DIR/tb/events.out.tfevents.*, readable by `tensorboard
// --logdir`), and one live console line (step, loss, lr, tokens/s, MFU, ETA).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

namespace agenttune {

// Minimal TensorBoard writer: TFRecord framing (length, masked CRC32C, payload, masked CRC32C)
// around hand-encoded Event protos carrying simple_value scalars. No protobuf dependency.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& logdir);
  ~TensorBoardWriter();
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class MetricsLogger {
 public:
  // append=true on resume: keeps earlier lines (lines for steps >= the resumed step are dropped
  // first, so a crash between a log line and its checkpoint leaves no duplicate steps).
  MetricsLogger(const std::filesystem::path& output_dir, bool tensorboard, int64_t resume_step);
  // One step's scalars, in insertion order; "step" is added. Writes JSONL and TensorBoard.
  void log(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);
  void flush();

 private:
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// The live console line, redrawn in place on a terminal (one line per update otherwise).
class ProgressLine {
 public:
  ProgressLine(int64_t total_steps, int64_t start_step);
  // Prints "step 120/1000 | loss 2.3456 | lr 3.00e-04 | 12.3k tok/s | MFU 41.2% | ETA 1h02m".
  void update(int64_t step, double loss, double lr, double tokens_per_s, double mfu);
  void finish();
  static std::string format_eta(double seconds);  // "1h02m", "4m05s", "12s"

 private:
  int64_t total_, start_;
  std::chrono::steady_clock::time_point t0_;
  bool tty_;
};

}  // namespace agenttune
