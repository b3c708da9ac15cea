// A step's metrics row: its columns, their order and which ones appear when; and MFU.
#include <gtest/gtest.h>

#include <cmath>

#include "agenttune/train/run_report.h"

namespace agenttune {
namespace {

std::vector<std::string> names(const MetricsRow& row) {
  std::vector<std::string> out;
  for (const auto& [name, value] : row) out.push_back(name);
  return out;
}

double value(const MetricsRow& row, const std::string& name) {
  for (const auto& [n, v] : row)
    if (n == name) return v;
  ADD_FAILURE() << "no column " << name;
  return 0;
}

StepOutcome outcome() {
  StepOutcome o;
  o.loss = 2.5, o.grad_norm = 0.75, o.trained = 90, o.real = 96, o.slots = 128;
  return o;
}

TEST(MetricsRow, ThePlainColumnsInTheirOrder) {
  StepMeasures m;
  m.lr = 1e-4, m.tokens_total = 960, m.seconds = 0.5, m.comm_seconds = 0.1, m.inflight_seconds = 0.05;
  m.tokens_per_s = 192;
  const auto row = metrics_row(outcome(), m, {});
  EXPECT_EQ(names(row), (std::vector<std::string>{"loss", "lr", "grad_norm", "tokens_total", "step_tokens",
                                                  "step_trained_tokens", "tokens_per_s", "step_seconds",
                                                  "comm_seconds", "comm_inflight_seconds", "mfu"}));
  EXPECT_EQ(value(row, "step_tokens"), 96);
  EXPECT_EQ(value(row, "step_trained_tokens"), 90);
  EXPECT_TRUE(std::isnan(value(row, "mfu")));  // unknown peak: null, not left out
}

TEST(MetricsRow, OptionalColumnsAppearWhenTheyApply) {
  StepMeasures m;
  m.mfu = 0.4;
  m.host_syncs = 1;
  m.val_loss = 2.75;
  StepOutcome o = outcome();
  o.judgement = {StepVerdict::NonFinite, "non-finite"};
  const auto row = metrics_row(o, m, {{{"code", 0.25}, {"text", 0.75}}, true});
  const auto n = names(row);
  EXPECT_EQ(std::vector<std::string>(n.begin() + 10, n.end()),
            (std::vector<std::string>{"mfu", "host_syncs", "share/code", "share/text", "pad_fraction", "val_loss",
                                      "skipped"}));
  EXPECT_EQ(value(row, "mfu"), 0.4);
  EXPECT_EQ(value(row, "share/text"), 0.75);
  EXPECT_EQ(value(row, "pad_fraction"), 1.0 - 96.0 / 128.0);
  EXPECT_EQ(value(row, "skipped"), 1.0);
}

TEST(MetricsRow, ARolledBackStepKeepsLossLrAndGradNorm) {
  EXPECT_EQ(names(rolled_back_row(outcome(), 3e-4)), (std::vector<std::string>{"loss", "lr", "grad_norm", "skipped"}));
}

TEST(MetricsRow, MfuIsPerDeviceAndUnknownWithoutAPeak) {
  EXPECT_DOUBLE_EQ(model_flops_utilisation(6e9, 1000, 1e14, 2), 6e9 * 1000 / 2e14);
  EXPECT_EQ(model_flops_utilisation(6e9, 1000, 0, 1), -1.0);
}

PhaseSeconds phases(double scale, int64_t faults) {
  PhaseSeconds p;
  p.data = 0.001 * scale, p.step.forward = 0.5 * scale, p.step.backward = 1.0 * scale;
  p.step.reduce = 0.1 * scale, p.step.optimizer = 0.3 * scale, p.other = 0.099 * scale;
  p.minor_faults = faults;
  return p;
}

TEST(MetricsRow, PhaseTimesAddAColumnPerPhaseAndTheFaults) {
  StepMeasures m;
  m.host_syncs = 1;
  m.phases = phases(1, 42);
  const auto n = names(metrics_row(outcome(), m, {}));
  EXPECT_EQ(std::vector<std::string>(n.begin() + 11, n.end()),
            (std::vector<std::string>{"host_syncs", "phase_data_seconds", "phase_forward_seconds",
                                      "phase_backward_seconds", "phase_reduce_seconds", "phase_optimizer_seconds",
                                      "phase_other_seconds", "minor_faults"}));
  EXPECT_EQ(value(metrics_row(outcome(), m, {}), "phase_backward_seconds"), 1.0);
  EXPECT_EQ(value(metrics_row(outcome(), m, {}), "minor_faults"), 42);
}

TEST(PhaseTable, MeansPerStepAfterTheWarmUpStep) {
  PhaseTable t;
  t.add(phases(100, 1000000));  // the first step: left out
  t.add(phases(1, 10));
  t.add(phases(3, 30));
  const std::string table = t.format();
  EXPECT_NE(table.find("mean of 2 step(s) after the first"), std::string::npos) << table;
  // forward: (0.5 + 1.5) / 2 s = 1000 ms, a quarter of the 4000 ms step.
  EXPECT_NE(table.find("forward          1000.0   25.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("step             4000.0  100.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("minor page faults per step: 20"), std::string::npos) << table;
}

}  // namespace
}  // namespace agenttune
