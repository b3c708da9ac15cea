// LoRA against PEFT (the oracle, tests/oracle/peft_lora.py): the same transformers models, PEFT's
// LoraConfig with all seven targets, LoRA and rsLoRA scaling, GQA shapes, dropout; initial A values
// drawn by us equal to torch's kaiming_uniform_ from the documented seeds, logits, loss and every
// adapter gradient equal in fp32, and the merged weights' logits equal to merge_and_unload()'s.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/loss.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "oracle_fixture.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

using testing::oracle_root;
using testing::peft_lora_root;

constexpr double kTolerance = 1e-5;  // relative to the reference's largest magnitude, fp32

double relative_diff(const at::Tensor& ours, const at::Tensor& ref) {
  const double scale = std::max(1e-6, ref.abs().max().item<double>());
  return (ours.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>() / scale;
}

// One PEFT variant of peft_lora.py: its model, adapter config, and reference tensors.
struct Variant {
  std::string name;
  nlohmann::json spec;
  AdapterConfig adapter;
  LlamaForCausalLM model{nullptr};
  std::unique_ptr<SafetensorsFile> ref;
  at::Tensor tokens, targets;

  explicit Variant(const std::string& n) : name(n) {
    spec = nlohmann::json::parse(read_text_file(peft_lora_root() / "variants.json")).at(n);
    adapter.kind = AdapterKind::Lora;
    adapter.rank = spec.at("rank").get<int64_t>();
    adapter.alpha = spec.at("alpha").get<double>();
    adapter.rslora = spec.at("rslora").get<bool>();
    adapter.init_seed = spec.at("init_seed").get<uint64_t>();
    adapter.dropout = spec.value("dropout", 0.0);
    const auto case_dir = oracle_root() / spec.at("case").get<std::string>();
    model = load_pretrained(case_dir / "model").model;
    ref = std::make_unique<SafetensorsFile>(SafetensorsFile::open(peft_lora_root() / n / "ref.safetensors"));
    auto inputs = SafetensorsFile::open(case_dir / "ref.safetensors");
    tokens = inputs.tensor("tokens").to(at::kLong);
    targets = labels_to_targets(inputs.tensor("labels").to(at::kLong));
  }
  at::Tensor get(const std::string& n) const { return ref->tensor(n).clone(); }
  at::Tensor logits() { return model->forward(tokens, default_positions(tokens.size(0), tokens.size(1), 0, at::kCPU)); }
  // B as the oracle set it (non-zero, so that the adapter changes the output and A has a gradient).
  void set_b() {
    at::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().ends_with(".lora_B")) p.value().copy_(get("set." + p.key()));
  }
};

class PeftLora : public ::testing::TestWithParam<std::string> {};

TEST_P(PeftLora, InitialAdaptersAreTorchsKaimingUniformAndLeaveTheBaseExact) {
  Variant v(GetParam());
  at::NoGradGuard no_grad;
  const auto base_logits = v.logits();
  add_adapters(v.model, v.adapter);
  int64_t adapters = 0;
  for (auto& p : v.model->named_parameters()) {
    const auto& t = p.value();
    if (!is_adapter_parameter(p.key())) {
      EXPECT_FALSE(t.requires_grad()) << p.key();
      continue;
    }
    ++adapters;
    EXPECT_TRUE(t.requires_grad()) << p.key();
    EXPECT_EQ(t.scalar_type(), at::kFloat) << p.key();
    if (p.key().ends_with(".lora_A")) {
      EXPECT_TRUE(at::equal(t, v.get("init." + p.key()))) << p.key() << " differs from kaiming_uniform_";
    } else {
      EXPECT_EQ(at::count_nonzero(t).item<int64_t>(), 0) << p.key();
      EXPECT_EQ(t.sizes(), v.get("set." + p.key()).sizes()) << p.key();
    }
  }
  EXPECT_EQ(adapters, 2 * 7 * v.model->config().num_hidden_layers);
  EXPECT_TRUE(at::equal(v.logits(), base_logits)) << "B = 0 must leave the model exactly the base";
}

// In every recompute mode: an adapter must be in the recomputed paths too.
TEST_P(PeftLora, LogitsLossAndEveryAdapterGradientEqualPeft) {
  Variant v(GetParam());
  add_adapters(v.model, v.adapter);
  v.set_b();
  for (Recompute mode : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    if (v.adapter.dropout > 0 && mode == Recompute::Full) continue;  // the RNG is the engine's to restore
    SCOPED_TRACE(enum_name(mode));
    v.model->recompute = mode;
    at::manual_seed(v.spec.value("rng_seed", 0));
    auto logits = v.logits();
    EXPECT_LE(relative_diff(logits, v.get("logits")), kTolerance);
    auto loss = cross_entropy_sum(logits, v.targets) / count_trained(v.targets);
    EXPECT_LE(std::abs(loss.item<double>() / v.get("loss").item<double>() - 1), kTolerance);
    loss.backward();
    int checked = 0;
    double worst = 0;
    for (auto& p : v.model->named_parameters()) {
      if (!is_adapter_parameter(p.key())) {
        EXPECT_FALSE(p.value().grad().defined()) << p.key() << ": a frozen base parameter got a gradient";
        continue;
      }
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      const auto ref = v.get("grad." + p.key());
      EXPECT_GT(ref.abs().max().item<double>(), 0) << p.key() << ": the oracle's gradient is zero";
      const double d = relative_diff(p.value().grad(), ref);
      worst = std::max(worst, d);
      EXPECT_LE(d, kTolerance) << p.key();
      p.value().mutable_grad().reset();
      ++checked;
    }
    EXPECT_EQ(checked, 2 * 7 * v.model->config().num_hidden_layers);
    std::printf("%s %s: loss %.6f, largest relative adapter-gradient difference %.2e\n", GetParam().c_str(),
                std::string(enum_name(mode)).c_str(), loss.item<double>(), worst);
  }
}

TEST_P(PeftLora, MergedWeightsGiveMergeAndUnloadsLogits) {
  Variant v(GetParam());
  add_adapters(v.model, v.adapter);
  v.set_b();
  merge_adapters(v.model);
  EXPECT_FALSE(has_adapters(v.model));
  for (auto& p : v.model->named_parameters()) EXPECT_FALSE(is_adapter_parameter(p.key())) << p.key();
  at::NoGradGuard no_grad;
  EXPECT_LE(relative_diff(v.logits(), v.get("merged_logits")), kTolerance);
}

// The variants of peft_lora.py (listed here, not read from its output: listing the tests must not
// run the oracle).
INSTANTIATE_TEST_SUITE_P(Oracle, PeftLora, ::testing::Values("lora_mha", "lora_gqa", "rslora_gqa", "dropout_mha", "lora_qwen2",
                                                            "lora_qwen3"));

LlamaConfig tiny_config() { return testing::tiny_llama(97, 64, 96); }

AdapterConfig lora(std::vector<std::string> targets = {kAdapterTargets.begin(), kAdapterTargets.end()}) {
  AdapterConfig a;
  a.kind = AdapterKind::Lora;
  a.rank = 4;
  a.target_modules = std::move(targets);
  return a;
}

// A sharded run builds from a meta-device skeleton and reads each parameter's values by name.
TEST(Lora, MetaSkeletonHasTheShapesAndInitialValuesComeByName) {
  const auto c = tiny_config();
  LlamaForCausalLM skeleton(c, ParamOptions().device(at::kMeta));
  add_adapters(skeleton, lora({"k_proj", "down_proj"}));
  auto real = make_llama(c, 1);
  add_adapters(real, lora({"k_proj", "down_proj"}));
  const auto real_params = real->named_parameters();
  int64_t adapters = 0;
  for (auto& p : skeleton->named_parameters()) {
    if (!is_adapter_parameter(p.key())) continue;
    ++adapters;
    EXPECT_TRUE(p.value().is_meta()) << p.key();
    EXPECT_EQ(p.value().scalar_type(), at::kFloat);
    const auto& mine = real_params[p.key()];
    EXPECT_EQ(p.value().sizes(), mine.sizes()) << p.key();
    EXPECT_TRUE(at::equal(initial_adapter_value(lora(), p.key(), p.value().sizes()), mine)) << p.key();
  }
  EXPECT_EQ(adapters, 2 * 2 * c.num_hidden_layers);
  const auto& down_a = real_params["model.layers.1.mlp.down_proj.lora_A"];
  EXPECT_EQ(down_a.sizes(), (std::vector<int64_t>{4, c.intermediate_size}));
  EXPECT_LE(down_a.abs().max().item<double>(), 1 / std::sqrt(double(c.intermediate_size)));
  EXPECT_GT(down_a.abs().max().item<double>(), 0.9 / std::sqrt(double(c.intermediate_size)));
  EXPECT_EQ(real_params.find("model.layers.0.self_attn.q_proj.lora_A"), nullptr);
  // Another seed, other values; the same seed, the same values whatever the targets.
  auto other = lora();
  other.init_seed = 1;
  const auto name = std::string("model.layers.0.self_attn.k_proj.lora_A");
  EXPECT_FALSE(at::equal(initial_adapter_value(other, name, {4, 64}), initial_adapter_value(lora(), name, {4, 64})));
  EXPECT_TRUE(at::equal(initial_adapter_value(lora(), name, {4, 64}), real_params[name]));
}

// A bf16 base keeps float32 adapters and computes as PEFT does there: the delta in float32 on the
// float32-cast input, added to the bf16 base output in float32, then rounded to bf16.
TEST(Lora, Bf16BaseKeepsFloat32AdaptersAndAddsTheDeltaInFloat32) {
  auto c = tiny_config();
  c.dtype = at::kBFloat16;
  auto model = make_llama(c, 2);
  add_adapters(model, lora());
  auto& q = *model->model->layers[0]->self_attn->q_proj;
  EXPECT_EQ(q.weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(q.lora_A.scalar_type(), at::kFloat);
  {
    at::NoGradGuard no_grad;
    q.lora_B.normal_(0, 0.5);
  }
  auto x = at::randn({2, 5, c.hidden_size}).to(at::kBFloat16);
  auto y = q.forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  auto delta = at::linear(at::linear(x.to(at::kFloat), q.lora_A), q.lora_B) * q.lora_scale;
  auto want = (at::linear(x, q.weight).to(at::kFloat) + delta).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(y, want));
  EXPECT_GT((y.to(at::kFloat) - at::linear(x, q.weight).to(at::kFloat)).abs().max().item<double>(), 0.1);
  // The whole model trains its float32 adapters from a bf16 forward.
  auto tokens = at::randint(0, c.vocab_size, {2, 7}, at::kLong);
  auto loss = model->forward(tokens, default_positions(2, 7, 0, at::kCPU)).to(at::kFloat).logsumexp(-1).mean();
  loss.backward();
  EXPECT_EQ(q.lora_A.grad().scalar_type(), at::kFloat);
  EXPECT_GT(q.lora_A.grad().abs().max().item<double>(), 0);
  EXPECT_FALSE(q.weight.grad().defined());
}

// Dropout follows the training flag (eval: none), draws from the default generator (reseeding it
// repeats the masks) and touches only the adapter's input.
TEST(Lora, DropoutOnlyInTrainingAndOnlyOnTheAdapterPath) {
  auto c = tiny_config();
  auto model = make_llama(c, 3);
  auto cfg = lora();
  cfg.dropout = 0.5;
  add_adapters(model, cfg);
  auto& up = *model->model->layers[1]->mlp->up_proj;
  at::NoGradGuard no_grad;
  up.lora_B.normal_(0, 0.5);
  auto x = at::randn({3, c.hidden_size});
  const auto base = at::linear(x, up.weight);
  const auto full = base + at::linear(at::linear(x, up.lora_A), up.lora_B) * up.lora_scale;
  at::manual_seed(9);
  const auto a = up.forward(x);
  at::manual_seed(9);
  const auto b = up.forward(x);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_GT((a - full).abs().max().item<double>(), 1e-3);
  up.eval();
  EXPECT_LE((up.forward(x) - full).abs().max().item<double>(), 1e-6);
  EXPECT_LE((up.adapter_delta(x) - (full - base)).abs().max().item<double>(), 1e-6);
}

TEST(Lora, AddingTwiceOrWithKindNoneIsRefused) {
  auto model = make_llama(tiny_config(), 4);
  EXPECT_THROW(add_adapters(model, AdapterConfig{}), Error);
  add_adapters(model, lora());
  try {
    add_adapters(model, lora());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already has adapters"), std::string::npos) << e.what();
  }
}

std::string validation_error(const AdapterConfig& a) {
  try {
    a.validate("run.yaml: model.adapter");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(AdapterConfig, ASettingUnderKindNoneIsAnErrorNotIgnored) {
  AdapterConfig a;
  EXPECT_EQ(validation_error(a), "");
  a.rank = 64;
  EXPECT_EQ(validation_error(a),
            "run.yaml: model.adapter.rank is set but kind is none, so it would be ignored: "
            "set kind to lora or qlora, or remove rank");
  a = AdapterConfig{};
  a.target_modules = {"q_proj"};
  EXPECT_NE(validation_error(a).find("model.adapter.target_modules is set"), std::string::npos);
}

TEST(AdapterConfig, ValidateNamesTheKeyAndWhatWasExpected) {
  EXPECT_EQ(validation_error(lora()), "");
  auto a = lora();
  a.rank = 0;
  EXPECT_EQ(validation_error(a), "run.yaml: model.adapter.rank must be at least 1, got 0");
  a = lora();
  a.alpha = 0;
  EXPECT_EQ(validation_error(a), "run.yaml: model.adapter.alpha must be a positive number, got 0");
  a = lora();
  a.dropout = 1;
  EXPECT_EQ(validation_error(a), "run.yaml: model.adapter.dropout must be in [0, 1), got 1");
  EXPECT_EQ(validation_error(lora({})),
            "run.yaml: model.adapter.target_modules is empty: an adapter must wrap at least one of q_proj, k_proj, "
            "v_proj, o_proj, gate_proj, up_proj, down_proj");
  EXPECT_EQ(validation_error(lora({"q_proj", "vproj"})),
            "run.yaml: model.adapter.target_modules: 'vproj' is not a Llama projection (did you mean 'v_proj'?); the "
            "choices are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  EXPECT_EQ(validation_error(lora({"q_proj", "v_proj", "q_proj"})),
            "run.yaml: model.adapter.target_modules lists 'q_proj' twice");
}

}  // namespace
}  // namespace agenttune
