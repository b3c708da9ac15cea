// train.memory_check through the real binary on a fake device of 1 GiB (LD_PRELOAD,
// AGENTTUNE_FAKE_DEVICE_CAPACITY): a run whose plan does not fit is refused before any weight is
// read (its init_from folder holds a config.json and a truncated safetensors file that any read
// would fail on), with exit code 2, the plan's table and the changes that would fit; the first of
// them, applied with its --set overrides, then trains. `warn` goes on (and then fails on that
// unreadable file, which proves the refusal came first); the device's allocator refuses beyond its
// capacity as CUDA's does.
#include <ATen/ATen.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "../cli/cli_test_util.h"
#include "fake_device.h"

namespace fs = std::filesystem;
using namespace agenttune::testing;

namespace {

constexpr int64_t kCapacity = int64_t{1} << 30;

const std::string kPreload = std::string("env LD_PRELOAD=") + AGENTTUNE_FAKE_DEVICE_LIB +
                             " AGENTTUNE_FAKE_DEVICES=1 AGENTTUNE_FAKE_DEVICE_CAPACITY=" + std::to_string(kCapacity);

// About 70M parameters, nearly all in the embedding and the head (cheap to run on few tokens):
// 16-20 bytes per parameter without offload do not fit 90 % of 1 GiB.
TinyRun large_run() {
  TinyRun r;
  r.vocab = 32000, r.hidden = 1024, r.ffn = 1024, r.layers = 1, r.max_positions = 64;
  r.seq_len = 32, r.micro_batch = 1, r.global_batch = 2, r.max_steps = 2;
  r.code_docs = 40, r.text_docs = 8, r.max_doc_len = 100;
  r.checkpoint = "{interval: 1000}";
  r.extra = "dist: {device: fake}\n";
  return r;
}

// A model folder with large_run()'s architecture whose weights cannot be read: `init`'s
// config.json with the shape changed, and a safetensors file cut short.
fs::path unreadable_model(const fs::path& root, const TinyRun& r) {
  const auto dir = make_tiny_model(root);
  nlohmann::json config;
  std::ifstream(dir / "config.json") >> config;
  config["vocab_size"] = r.vocab, config["hidden_size"] = r.hidden, config["intermediate_size"] = r.ffn;
  config["num_hidden_layers"] = r.layers, config["max_position_embeddings"] = r.max_positions;
  if (config.contains("head_dim")) config["head_dim"] = r.hidden / 4;  // write_tiny_run's 4 heads
  std::ofstream(dir / "config.json") << config.dump(2);
  fs::resize_file(dir / "model.safetensors", 64);
  return dir;
}

// The --set overrides, the GPU count and the planned device total of the first row under
// "changes that fit" (| --set k=v --set k2=v2 | gpus | micro | accum | recompute | offload | params
// | grads | optim | activ | total | host/node | fits |).
struct FirstAlternative {
  std::vector<std::string> overrides;
  int gpus = 0;
  double total_gib = 0;
};
FirstAlternative first_alternative(const std::string& out) {
  FirstAlternative a;
  const size_t at = out.find("changes that fit");
  if (at == std::string::npos) return a;
  std::istringstream lines(out.substr(at));
  std::string line;
  for (int i = 0; i < 4 && std::getline(lines, line); ++i) {}  // the heading, the table's header and rule
  std::vector<std::string> cells;
  std::istringstream row(line);
  for (std::string cell; std::getline(row, cell, '|');) cells.push_back(cell);
  if (cells.size() < 12) return a;
  std::istringstream words(cells[1]);
  for (std::string w; words >> w;)
    if (w != "--set") a.overrides.push_back(w);
  a.gpus = std::stoi(cells[2]);
  a.total_gib = std::stod(cells[11]);
  return a;
}

std::string train_args(const fs::path& cfg, const std::vector<std::string>& overrides) {
  std::string args = "train --no-progress --config " + cfg.string();
  for (const auto& o : overrides) args += " --set " + o;
  return args;
}

TEST(MemoryCheckOnFakeDevice, RefusesBeforeReadingWeightsThenTheFirstAlternativeTrains) {
  const auto root = scratch_dir();
  const TinyRun r = large_run();
  const auto cfg = write_tiny_run(root, r);
  const auto model = unreadable_model(root, r);
  const std::string from_folder = "model.init_from=" + model.string();

  auto refused = agenttune::testing::agenttune(train_args(cfg, {from_folder, "output_dir=" + (root / "refused").string()}) + " 2>&1",
                           kPreload);
  std::printf("%s\n", refused.out.c_str());
  expect_clean_error(refused, {"does not fit 90% of fake:0's 1.00 GiB free", "| this run ", "changes that fit"});
  EXPECT_EQ(refused.out.find("safetensors"), std::string::npos) << "a weight was read:\n" << refused.out;
  const auto alt = first_alternative(refused.out);
  ASSERT_EQ(alt.gpus, 1) << refused.out;  // same GPU count first: the settings this test can run
  ASSERT_FALSE(alt.overrides.empty()) << refused.out;

  // `agenttune plan` at the device's size shows the same first change; with too little host memory
  // for the offloaded state it offers none (one GPU of 1 GiB is all this global batch of 2 allows
  // besides 2 GPUs, which do not fit either).
  auto plan = agenttune::testing::agenttune("plan --config " + cfg.string() + " --set " + from_folder +
                                                " --gpus 1 --gpu-memory 1 --host-memory 64 2>&1",
                                            kPreload);
  ASSERT_EQ(plan.rc, 0) << plan.out;
  const auto planned = first_alternative(plan.out);
  EXPECT_EQ(planned.overrides, alt.overrides) << plan.out;
  EXPECT_EQ(planned.total_gib, alt.total_gib) << plan.out;
  auto no_host = agenttune::testing::agenttune("plan --config " + cfg.string() + " --set " + from_folder +
                                                   " --gpus 1 --gpu-memory 1 --host-memory 0.5 2>&1",
                                               kPreload);
  ASSERT_EQ(no_host.rc, 0) << no_host.out;
  EXPECT_NE(no_host.out.find("does not fit: no change of recompute, offload, micro-batch or GPU count"),
            std::string::npos) << no_host.out;

  // The same run from a fresh model (no weights to read) is refused the same way without the
  // alternative, and trains with it.
  const auto fresh = root / "fresh";
  auto again = agenttune::testing::agenttune(train_args(cfg, {"output_dir=" + fresh.string()}) + " 2>&1", kPreload);
  EXPECT_EQ(again.rc, 2) << again.out;
  EXPECT_NE(again.out.find("changes that fit"), std::string::npos) << again.out;
  // The plan is right that it does not fit: unchecked, the device's allocator refuses it late and raw.
  auto unchecked = agenttune::testing::agenttune(
      train_args(cfg, {"output_dir=" + (root / "unchecked").string(), "train.memory_check=off"}) + " 2>&1", kPreload);
  EXPECT_EQ(unchecked.rc, 3) << unchecked.out;
  EXPECT_NE(unchecked.out.find("CUDA out of memory"), std::string::npos) << unchecked.out;
  auto overrides = alt.overrides;
  overrides.push_back("output_dir=" + fresh.string());
  const auto report = root / "device";
  auto ran = agenttune::testing::agenttune(train_args(cfg, overrides) + " 2>&1",
                                           kPreload + " AGENTTUNE_FAKE_DEVICE_REPORT=" + report.string());
  ASSERT_EQ(ran.rc, 0) << ran.out;
  EXPECT_NE(ran.out.find("fits"), std::string::npos) << ran.out;
  EXPECT_EQ(run_losses(fresh).size(), 2u);
  // The alternative's row is what the device then holds at its peak (within 10 %).
  std::ifstream in(report.string() + ".0.json");
  ASSERT_TRUE(in.good());
  const double peak = nlohmann::json::parse(in)["0"]["peak_bytes"].get<double>() / kCapacity;
  std::printf("[ figures  ] %s: device peak %.3f GiB, planned %.2f GiB\n", alt.overrides.front().c_str(), peak,
              alt.total_gib);
  EXPECT_NEAR(peak / alt.total_gib, 1.0, 0.10);
}

TEST(MemoryCheckOnFakeDevice, WarnGoesOnAndOffDoesNotPlan) {
  const auto root = scratch_dir();
  const TinyRun r = large_run();
  const auto cfg = write_tiny_run(root, r);
  const auto model = unreadable_model(root, r);
  // warn: the same report as a warning, then the run goes on to read the (unreadable) weights.
  auto warned = agenttune::testing::agenttune(train_args(cfg, {"model.init_from=" + model.string(), "train.memory_check=warn",
                                           "output_dir=" + (root / "warned").string()}) + " 2>&1",
                          kPreload);
  EXPECT_EQ(warned.rc, 2) << warned.out;
  EXPECT_NE(warned.out.find("] warn"), std::string::npos) << warned.out;
  EXPECT_NE(warned.out.find("changes that fit"), std::string::npos) << warned.out;
  EXPECT_NE(warned.out.find("safetensors"), std::string::npos) << warned.out;
  // off: no plan at all, straight to the weights.
  auto off = agenttune::testing::agenttune(train_args(cfg, {"model.init_from=" + model.string(), "train.memory_check=off",
                                        "output_dir=" + (root / "off").string()}) + " 2>&1",
                       kPreload);
  EXPECT_EQ(off.rc, 2) << off.out;
  EXPECT_EQ(off.out.find("memory plan"), std::string::npos) << off.out;
  EXPECT_NE(off.out.find("safetensors"), std::string::npos) << off.out;
}

// The allocator itself: free memory as capacity less what is allocated, and CUDA's error beyond it.
TEST(MemoryCheckOnFakeDevice, CapacityIsReportedAndEnforcedLikeCuda) {
  namespace fd = agenttune::testing::fake_device;
  const int64_t before = fd::capacity();
  fd::set_capacity(64 << 20);
  auto* allocator = dynamic_cast<c10::DeviceAllocator*>(c10::GetAllocator(fd::device().type()));
  ASSERT_NE(allocator, nullptr);
  const int64_t live = fd::counters(0).live_bytes;
  auto [free0, total] = allocator->getMemoryInfo(0);
  EXPECT_EQ(static_cast<int64_t>(total), 64 << 20);
  EXPECT_EQ(static_cast<int64_t>(free0), (64 << 20) - live);
  {
    auto t = at::empty({8 << 20}, at::TensorOptions().dtype(at::kFloat).device(fd::device()));  // 32 MiB
    EXPECT_EQ(static_cast<int64_t>(allocator->getMemoryInfo(0).first), (64 << 20) - live - (32 << 20));
    try {
      auto u = at::empty({10 << 20}, at::TensorOptions().dtype(at::kFloat).device(fd::device()));  // 40 MiB
      ADD_FAILURE() << "a 40 MiB allocation past the capacity succeeded";
    } catch (const c10::OutOfMemoryError& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA out of memory. Tried to allocate"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(fd::counters(0).live_bytes, live);
  fd::set_capacity(before);
}

}  // namespace
