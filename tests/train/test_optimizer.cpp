#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "agenttune/io/safetensors.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/sha256.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;

// Kept in sync with tests/train/py/adamw_oracle.py.
const AdamWOptions kOpts{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
const std::vector<std::string> kNames = {"w.matrix", "w.cube", "norm.weight", "bias"};
constexpr int kSteps = 5;
constexpr double kClipMax = 1.0;

// Generated once per build tree (ctest runs each test in its own process); the name carries the
// script's hash so an edited oracle is re-run.
const SafetensorsFile& oracle() {
  static const SafetensorsFile file = [] {
    auto script = source_dir() / "tests/train/py/adamw_oracle.py";
    auto path = binary_dir() / "test-scratch" / ("adamw_oracle_" + sha256_file_hex(script).substr(0, 12) + ".safetensors");
    if (!std::filesystem::exists(path)) {
      std::filesystem::create_directories(path.parent_path());
      std::string cmd = venv_python().string() + " '" + script.string() + "' '" + path.string() + "'";
      std::string out;
      if (run_command(cmd, &out) != 0) throw std::runtime_error(cmd + "\n" + out);
    }
    return SafetensorsFile::open(path);
  }();
  return file;
}

at::Tensor get(const std::string& name) { return oracle().tensor(name).clone(); }

NamedTensors fresh_params() {
  NamedTensors params;
  for (const auto& n : kNames) params.emplace_back(n, get("init." + n).requires_grad_(true));
  return params;
}

void set_grads(AdamW& opt, int k) {
  for (auto& [n, p] : opt.params()) p.mutable_grad() = get("grad." + std::to_string(k) + "." + n);
}

double lr_of(int k) { return static_cast<double>(oracle().tensor("lrs")[k].item<float>()); }

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(AdamW, MatchesTorchOptimOverFiveSteps) {
  AdamW opt(fresh_params(), kOpts);
  for (int k = 0; k < kSteps; ++k) {
    set_grads(opt, k);
    opt.step(lr_of(k));
    for (const auto& [n, p] : opt.params()) {
      const auto key = std::to_string(k) + "." + n;
      EXPECT_LT(max_diff(p, get("ref." + key)), 1e-6) << key;
      // The same fused kernel Python's AdamW(fused=True) calls: identical bits.
      EXPECT_TRUE(at::equal(p.detach(), get("fused." + key))) << key;
    }
  }
  EXPECT_EQ(opt.steps_taken(), kSteps);
  auto state = opt.state();
  for (const auto& [name, t] : state) {
    if (name.starts_with("step.")) EXPECT_EQ(t.item<float>(), kSteps) << name;
    else EXPECT_LT(max_diff(t, get("ref." + name)), 1e-6) << name;
  }
  EXPECT_EQ(state.size(), 3 * kNames.size());
}

TEST(AdamW, NoDecayOnOneDimensionalParams) {
  // With a zero grad, only weight decay moves a parameter: p *= 1 - lr * wd.
  AdamW opt(fresh_params(), kOpts);
  for (auto& [n, p] : opt.params()) p.mutable_grad() = at::zeros_like(p);
  opt.step(0.5);
  for (const auto& [n, p] : opt.params()) {
    auto init = get("init." + n);
    auto expected = p.dim() >= 2 ? init * (1 - 0.5 * kOpts.weight_decay) : init;
    EXPECT_LT(max_diff(p, expected), 1e-7) << n;
    EXPECT_EQ(p.dim() >= 2, !at::equal(p.detach(), init)) << n;
  }
}

TEST(AdamW, SkipsParamsWithoutGrad) {
  AdamW opt(fresh_params(), kOpts);
  set_grads(opt, 0);
  opt.params()[2].second.mutable_grad().reset();
  opt.step(lr_of(0));
  EXPECT_TRUE(at::equal(opt.params()[2].second.detach(), get("init.norm.weight")));
  EXPECT_LT(max_diff(opt.params()[0].second, get("ref.0.w.matrix")), 1e-6);
  EXPECT_EQ(opt.state()[3 * 2 + 2].second.item<float>(), 0.0f);  // step.norm.weight did not advance
  opt.zero_grad();
  for (const auto& [n, p] : opt.params()) EXPECT_FALSE(p.grad().defined()) << n;
}

TEST(AdamW, StateRoundTripContinuesBitIdentically) {
  AdamW a(fresh_params(), kOpts);
  for (int k = 0; k < 3; ++k) {
    set_grads(a, k);
    a.step(lr_of(k));
  }
  // A second optimizer over copies of the params, restored from a saved-and-reloaded state file.
  NamedTensors copies;
  for (const auto& [n, p] : a.params()) copies.emplace_back(n, p.detach().clone().requires_grad_(true));
  AdamW b(copies, kOpts);
  auto path = scratch_dir() / "state.safetensors";
  write_safetensors(path, a.state());
  auto file = SafetensorsFile::open(path);
  NamedTensors loaded;
  for (const auto& e : file.entries()) loaded.emplace_back(e.name, file.tensor(e.name));
  b.load_state(loaded);
  EXPECT_EQ(b.steps_taken(), 3);
  for (int k = 3; k < kSteps; ++k) {
    set_grads(a, k);
    set_grads(b, k);
    a.step(lr_of(k));
    b.step(lr_of(k));
  }
  for (size_t i = 0; i < kNames.size(); ++i)
    EXPECT_TRUE(at::equal(a.params()[i].second.detach(), b.params()[i].second.detach())) << kNames[i];
}

TEST(AdamW, LoadStateRejectsMissingAndMisshapenTensors) {
  AdamW opt(fresh_params(), kOpts);
  auto state = opt.state();
  auto missing = state;
  missing.erase(missing.begin() + 1);
  try {
    opt.load_state(missing);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg_sq.w.matrix"), std::string::npos) << e.what();
  }
  auto misshapen = state;
  misshapen[0].second = at::zeros({5, 7});
  try {
    opt.load_state(misshapen);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[5, 7]"), std::string::npos) << e.what();
  }
}

std::vector<at::Tensor> clip_params() {
  std::vector<at::Tensor> params;
  for (const auto& n : kNames) {
    auto p = at::zeros(oracle().tensor("clip.grad." + n).sizes()).requires_grad_(true);
    p.mutable_grad() = get("clip.grad." + n);
    params.push_back(p);
  }
  return params;
}

// The engine's clip (the one train_step runs) on a world of one; max_norm 0 only measures.
double clip(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) grads.push_back(p.grad());
  return parallel::clip_grad_norm(grads, max_norm, at::kCPU).item<double>();
}

TEST(ClipGradNorm, MatchesTorch) {
  auto params = clip_params();
  const double expected = oracle().tensor("clip.norm").item<float>();
  EXPECT_NEAR(clip(params, 0.0), expected, 1e-6 * expected);
  EXPECT_NEAR(clip(params, kClipMax), expected, 1e-6 * expected);
  for (size_t i = 0; i < kNames.size(); ++i)
    EXPECT_LT(max_diff(params[i].grad(), get("clip.out." + kNames[i])), 1e-6) << kNames[i];
  EXPECT_NEAR(clip(params, 0.0), kClipMax, 1e-5);
}

TEST(ClipGradNorm, LeavesSmallAndNonFiniteGradsAlone) {
  auto params = clip_params();
  const double norm = clip(params, 0.0);
  EXPECT_EQ(clip(params, norm * 2), norm);
  EXPECT_EQ(clip(params, 0.0), norm);
  EXPECT_TRUE(at::equal(params[0].grad(), get("clip.grad.w.matrix")));

  params[1].mutable_grad()[0][0][0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(clip(params, kClipMax)));
  params[1].mutable_grad()[0][0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(clip(params, kClipMax)));
  EXPECT_TRUE(at::equal(params[0].grad(), get("clip.grad.w.matrix")));
  EXPECT_EQ(clip({at::zeros({3}).requires_grad_(true)}, 0.0), 0.0);
}

}  // namespace
}  // namespace agenttune
