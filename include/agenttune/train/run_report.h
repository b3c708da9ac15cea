#pragma once
// What a run tells about its steps, from rank 0: the row of metrics.jsonl and TensorBoard
// (metrics_row, its columns in a fixed order), the progress line or evaluation log, and the
// measures behind them: wall clock, communication time, throughput, MFU, host syncs.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agenttune/model/flops.h"
#include "agenttune/parallel/host_syncs.h"
#include <c10/core/CachingDeviceAllocator.h>
#include "agenttune/parallel/process_group.h"
#include "agenttune/train/checkpoint_schedule.h"
#include "agenttune/train/device_peak.h"
#include "agenttune/train/metrics.h"
#include "agenttune/train/step.h"

namespace agenttune {

struct TrainRun;

using MetricsRow = std::vector<std::pair<std::string, double>>;

// One step's seconds per phase (metrics.phase_times): waiting for its batches, the step's own
// phases (each ended by a drain of the device), and the rest of its wall clock.
struct PhaseSeconds {
  double data = 0;
  StepPhaseTimes step;
  double other = 0;
  // Minor page faults of the process since the previous step's (first touches of memory the
  // allocator took from the OS: allocator churn shows here).
  int64_t minor_faults = 0;
};

// The phases by name, in the order of the metrics columns and the table.
std::vector<std::pair<std::string, double>> phase_columns(const PhaseSeconds& p);

// What one step measured besides its outcome.
struct StepMeasures {
  double lr = 0;
  int64_t tokens_total = 0;  // tokens the model read since the run began, all ranks
  double seconds = 0;        // the whole step, data reading included
  double comm_seconds = 0;
  double inflight_seconds = 0;  // NaN (written as null) on NCCL
  double tokens_per_s = 0;      // the step's tokens without padding: what throughput and MFU are honest about
  double mfu = -1;              // < 0: unknown (no peak FLOPs, as on a CPU); written as null
  std::optional<int64_t> host_syncs;  // with metrics.host_syncs
  // The device allocator's peak of allocated bytes during the step, where it keeps one (CUDA's
  // caching allocator, the fake device); what `agenttune plan` predicts. Absent on a CPU.
  std::optional<int64_t> peak_device_bytes;
  double data_seconds = 0;            // from the step's start until its batches were in hand
  std::optional<PhaseSeconds> phases;  // with metrics.phase_times
  std::optional<double> val_loss;     // on an evaluated step
  // On an evaluated step with an `eval:` section: eval/<task>/<metric> and the rest (eval/eval_run.h).
  std::vector<std::pair<std::string, double>> eval;
};

// The data stream's columns: share/<source name> per source, and whether pad_fraction is written
// (padding appears with packing: pad, and with packed conversations, whose rows end where the next
// conversation would not fit).
struct DataColumns {
  std::vector<std::pair<std::string, double>> shares;
  bool padding = false;
};

// One completed step's row; a step whose update was refused (skip mode) carries skipped: 1.
MetricsRow metrics_row(const StepOutcome& o, const StepMeasures& m, const DataColumns& data);
// The row of a bad step that a rollback undoes (the step runs again after it).
MetricsRow rolled_back_row(const StepOutcome& o, double lr);

// Per device (the step's tokens were shared by every rank's device); -1 without a peak.
double model_flops_utilisation(double flops_per_token, double tokens_per_s, double peak_flops, int world);

// The per-phase table of a profiled run: mean seconds per step and each phase's share. The first
// step (warm-up: allocations, lazy initialisation) is left out when there are others.
class PhaseTable {
 public:
  void add(const PhaseSeconds& p) { steps_.push_back(p); }
  std::string format() const;

 private:
  std::vector<PhaseSeconds> steps_;
};

// The wall clock and communication time of one step, from its construction.
class StepClock {
 public:
  explicit StepClock(const parallel::ProcessGroup& dist);
  double seconds() const;  // since construction
  // Fills seconds, comm_seconds and inflight_seconds with what has passed so far.
  void stamp(StepMeasures& m) const;

 private:
  const parallel::ProcessGroup& dist_;
  std::chrono::steady_clock::time_point t0_;
  double comm0_, inflight0_;
};

class RunReport {
 public:
  // Logs the device's peak for MFU and the run's shape; with metrics.host_syncs, opens the sync
  // counter now, so that a CPU device fails before the first step rather than after it.
  RunReport(const TrainRun& run, bool progress);
  RunReport(const RunReport&) = delete;
  RunReport& operator=(const RunReport&) = delete;

  // train_step, with its host syncs counted when asked (a debug line names the first extra one).
  StepOutcome counted_step(TrainRun& run, const std::vector<PackedBatch>& batches, const StepRequest& req);
  // A completed step: fills m's throughput and MFU, then (rank 0) writes the row every
  // train.log_interval steps, at the last and at every evaluated one, and draws the progress line
  // or logs the val_loss.
  void step(const TrainRun& run, const StepOutcome& o, StepMeasures& m);
  void rolled_back(int64_t step, const StepOutcome& o, double lr);
  // How the loop ended early (--exit-after-steps, or a stop signal after its checkpoint).
  void ended(const TrainRun& run, RunEnd end, int64_t exit_after_steps);
  // The progress line's last draw, each source's epochs, and the metrics flushed.
  void finish(const TrainRun& run);

 private:
  bool progress_;
  std::unique_ptr<MetricsLogger> metrics_;  // rank 0 only
  ProgressLine line_;
  FlopsPerToken flops_;
  DevicePeak peak_;
  std::unique_ptr<parallel::HostSyncCounter> syncs_;
  int64_t last_syncs_ = 0;
  c10::DeviceAllocator* device_stats_ = nullptr;  // null where the device keeps no allocator stats
  c10::DeviceIndex device_index_ = 0;
  std::optional<int64_t> last_peak_;
  bool profile_phases_ = false;
  StepPhaseTimes step_phases_;  // the last counted_step's
  PhaseTable phase_table_;
  int64_t faults_at_last_step_ = 0;
};

}  // namespace agenttune
