// Llama-3.x, Qwen2.5 and Qwen3 as config differences of the one Llama module. Parity of logits,
// loss, every gradient and greedy ids with transformers runs in test_hf_parity.cpp (suite
// Families); here: export (transformers reloads our folder with the family's own class and gives
// our logits), config.json both ways with model_type/architectures and llama3 rope scaling, the
// refusals naming what is not supported, the llama3 frequency bands, and the new parameters'
// initial values, counts and their survival through QLoRA's quantise/merge rebuilds.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <tuple>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/adapter.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/rope_frequencies.h"
#include "oracle_fixture.h"
#include "test_paths.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

LlamaConfig family(ModelFamily f) {
  auto c = testing::tiny_llama(101, 32, 48, 2, 4, 2);
  c.model_type = f;
  if (f == ModelFamily::Qwen3) c.head_dim = 16;  // explicit, != hidden / heads (8), as in Qwen3
  return c;
}

class FamilyExport : public ::testing::TestWithParam<std::string> {};

// Our save of the transformers-made model: config.json names the same class and model type, and
// transformers (AutoModelForCausalLM, so that class) computes our logits from it.
TEST_P(FamilyExport, TransformersReloadsOurSaveWithSameLogits) {
  const auto src = testing::oracle_root() / GetParam() / "model";
  auto loaded = load_pretrained(src);
  const auto dir = testing::scratch_dir() / ("family_export_" + GetParam());
  std::filesystem::remove_all(dir);
  save_pretrained(loaded.model, dir);
  const json theirs = read_json_file(src / "config.json"), ours = read_json_file(dir / "config.json");
  EXPECT_EQ(ours.at("architectures"), theirs.at("architectures"));
  EXPECT_EQ(ours.at("model_type"), theirs.at("model_type"));
  const auto reread = read_hf_config(dir / "config.json");
  EXPECT_EQ(llama_config_to_json(reread), llama_config_to_json(loaded.model->config()));

  const int64_t T = 40;  // past the Llama-3 case's original context (32)
  auto tokens = at::arange(3, 3 + 2 * T, at::kLong).mul(7).remainder(loaded.model->config().vocab_size).view({2, T});
  at::NoGradGuard ng;
  auto logits = loaded.model->forward(tokens, default_positions(2, T, 0, at::kCPU));
  write_safetensors(dir / "expect.safetensors", {{"tokens", tokens.to(at::kFloat)}, {"logits", logits.contiguous()}});
  std::string out;
  const int rc = testing::run_command(testing::venv_python().string() + " " +
                                          (testing::source_dir() / "tests/oracle/check_logits.py").string() + " " +
                                          dir.string(),
                                      &out);
  EXPECT_EQ(rc, 0) << out;
}

INSTANTIATE_TEST_SUITE_P(Oracle, FamilyExport,
                         ::testing::Values("llama3_rope_tied", "qwen2_biases", "qwen3_qk_norm_tied"));

TEST(Families, ConfigJsonCarriesEveryFamilySwitchBothWays) {
  auto llama3 = family(ModelFamily::Llama);
  llama3.rope_scaling_type = RopeScalingType::Llama3;
  llama3.rope_scaling_factor = 32, llama3.rope_low_freq_factor = 1.5, llama3.rope_high_freq_factor = 6;
  llama3.rope_original_max_position_embeddings = 16;
  auto biased_llama = family(ModelFamily::Llama);
  biased_llama.attention_bias = true;
  auto qwen3_biased = family(ModelFamily::Qwen3);
  qwen3_biased.attention_bias = true;
  for (const auto& [c, arch, model_type] : std::vector<std::tuple<LlamaConfig, std::string, std::string>>{
           {llama3, "LlamaForCausalLM", "llama"},
           {biased_llama, "LlamaForCausalLM", "llama"},
           {family(ModelFamily::Qwen2), "Qwen2ForCausalLM", "qwen2"},
           {qwen3_biased, "Qwen3ForCausalLM", "qwen3"}}) {
    const json j = llama_config_to_json(c);
    EXPECT_EQ(j.at("architectures"), json::array({arch}));
    EXPECT_EQ(j.at("model_type"), model_type);  // transformers' names, spelled here, not read from our enum
    // transformers 4's rope_scaling and 5's rope_parameters say the same scaling.
    if (c.rope_scaling_type == RopeScalingType::Llama3) {
      EXPECT_EQ(j.at("rope_scaling").at("rope_type"), "llama3");
      EXPECT_EQ(j.at("rope_parameters").at("low_freq_factor"), 1.5);
      EXPECT_EQ(j.at("rope_parameters").at("original_max_position_embeddings"), 16);
    }
    EXPECT_EQ(llama_config_to_json(llama_config_from_json(j, "test")), j) << arch;
  }
}

TEST(Families, WhatTheModuleDoesNotComputeIsRefusedByName) {
  json base = llama_config_to_json(family(ModelFamily::Qwen2));
  auto error_with = [&](const std::function<void(json&)>& edit) {
    json j = base;
    edit(j);
    return error_of([&] { llama_config_from_json(j, "cfg.json"); });
  };
  EXPECT_NE(error_with([](json& j) {
              j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
            }).find("rope_parameters: rope scaling type 'yarn' is not supported (supported: default, linear, llama3)"),
            std::string::npos);
  EXPECT_NE(error_with([](json& j) { j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; })
                .find("rope_scaling: rope scaling type 'dynamic'"),
            std::string::npos);
  EXPECT_NE(error_with([](json& j) {
              j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"high_freq_factor", 4.0},
                                   {"original_max_position_embeddings", 8192}};
            }).find("required key 'low_freq_factor' is missing"),
            std::string::npos);
  // The two spellings disagreeing on llama3's parameters.
  EXPECT_NE(error_with([](json& j) {
              json r = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
              j["rope_scaling"] = r;
              r["original_max_position_embeddings"] = 4096;
              r["rope_theta"] = 10000.0;
              j["rope_parameters"] = r;
            }).find("make them equal"),
            std::string::npos);
  EXPECT_NE(error_with([](json& j) { j["use_sliding_window"] = true; }).find("use_sliding_window"), std::string::npos);
  const auto sliding = error_with([](json& j) { j["layer_types"] = json::array({"full_attention", "sliding_attention"}); });
  EXPECT_NE(sliding.find("layer_types has \"sliding_attention\""), std::string::npos) << sliding;
  EXPECT_NE(error_with([](json& j) { j["model_type"] = "mistral"; })
                .find("model_type 'mistral' is not supported (supported: llama, qwen2, qwen3)"),
            std::string::npos);
  EXPECT_NE(error_with([](json& j) { j["mlp_bias"] = true; }).find("mlp_bias"), std::string::npos);
  EXPECT_NE(error_with([](json& j) { j["attention_bias"] = true; }).find("cfg.json: attention_bias is true, but qwen2"),
            std::string::npos);
  json unbiased = base;
  unbiased["attention_bias"] = false;
  EXPECT_FALSE(llama_config_from_json(unbiased, "cfg.json").o_bias());
  auto qwen2 = family(ModelFamily::Qwen2);
  qwen2.attention_bias = true;
  EXPECT_NE(error_of([&] { qwen2.validate("model"); }).find("attention_bias is not a qwen2 setting"), std::string::npos);
}

// llama3 scaling's own keys do nothing under linear scaling: set there, they are an error naming
// them and the type, in a YAML shape as in a config.json.
TEST(Families, Llama3RopeKeysWithLinearScalingAreRefused) {
  auto c = family(ModelFamily::Llama);
  c.rope_scaling_factor = 2;
  EXPECT_NO_THROW(c.validate("model"));
  c.rope_high_freq_factor = 8;
  const auto e = error_of([&] { c.validate("model"); });
  EXPECT_NE(e.find("model: rope_low_freq_factor (1), rope_high_freq_factor (8)"), std::string::npos) << e;
  EXPECT_NE(e.find("but rope_scaling_type is linear"), std::string::npos) << e;
  c.rope_scaling_type = RopeScalingType::Llama3;
  EXPECT_NO_THROW(c.validate("model"));
}

// head_dim 32 at theta 5e5 with an original context of 32 (low/high factors 1 and 4): wavelengths
// 2 pi / inv_freq of 6.3 (< 8: kept), 14.3 (between 8 and 32: smoothed), then > 32 (divided by 8).
TEST(Families, Llama3ScalingKeepsShortWavelengthsSmoothsTheBandAndDividesLongOnes) {
  auto c = family(ModelFamily::Llama);
  c.hidden_size = 128, c.rope_theta = 500000;
  const auto plain = rope_inverse_frequencies(c, at::kCPU);
  c.rope_scaling_type = RopeScalingType::Llama3;
  c.rope_scaling_factor = 8, c.rope_original_max_position_embeddings = 32;
  const auto scaled = rope_inverse_frequencies(c, at::kCPU);
  ASSERT_EQ(scaled.numel(), 16);
  EXPECT_EQ(scaled[0].item<float>(), plain[0].item<float>());
  EXPECT_LT(scaled[1].item<float>(), plain[1].item<float>());
  EXPECT_GT(scaled[1].item<float>(), plain[1].item<float>() / 8);
  for (int64_t i = 2; i < 16; ++i) EXPECT_EQ(scaled[i].item<float>(), (plain[i] / 8).item<float>()) << i;
  // max_position_embeddings is already llama3's extended context: no stretching of the limit.
  EXPECT_EQ(c.max_positions(), c.max_position_embeddings);
}

// HF's init (biases zero, every norm one) and parameter counts that the memory plan and the flops
// estimate share with the module.
TEST(Families, NewParametersStartAsHfInitialisesThemAndAreCounted) {
  for (ModelFamily f : {ModelFamily::Llama, ModelFamily::Qwen2, ModelFamily::Qwen3}) {
    SCOPED_TRACE(enum_name(f));
    auto c = family(f);
    auto model = make_llama(c, 3);
    int64_t numel = 0, biases = 0, qk_norms = 0;
    for (const auto& p : model->named_parameters()) {
      numel += p.value().numel();
      const bool bias = p.key().find(".bias") != std::string::npos;
      if (bias) {
        ++biases;
        EXPECT_TRUE(at::equal(p.value(), at::zeros_like(p.value()))) << p.key();
      }
      if (p.key().find("q_norm") != std::string::npos || p.key().find("k_norm") != std::string::npos) {
        ++qk_norms;
        EXPECT_EQ(p.value().numel(), c.resolved_head_dim());
        EXPECT_TRUE(at::equal(p.value(), at::ones_like(p.value()))) << p.key();
      }
    }
    EXPECT_EQ(numel, count_parameters(c));
    EXPECT_EQ(biases, f == ModelFamily::Qwen2 ? 3 * c.num_hidden_layers : 0);
    EXPECT_EQ(qk_norms, f == ModelFamily::Qwen3 ? 2 * c.num_hidden_layers : 0);
  }
}

// QLoRA rebuilds each projection (quantise, dequantise, merge): Qwen2's q/k/v biases stay, dense,
// frozen and with their values, so the merged model is the adapted one.
TEST(Families, BiasesSurviveQuantiseDequantiseAndMerge) {
  auto model = make_llama(family(ModelFamily::Qwen2), 4);
  {
    at::NoGradGuard ng;
    for (auto& p : model->named_parameters())
      if (p.key().find(".bias") != std::string::npos) p.value().uniform_(-0.5, 0.5);
  }
  const auto before = model->named_parameters().find("model.layers.1.self_attn.k_proj.bias")->clone();
  AdapterConfig a;
  a.kind = AdapterKind::Qlora, a.rank = 4;
  add_adapters(model, a);
  quantize_projections(model, /*quantise_values=*/true);
  auto tokens = at::arange(3, 27, at::kLong).view({2, 12});
  auto positions = default_positions(2, 12, 0, at::kCPU);
  for (int stage = 0; stage < 3; ++stage) {
    SCOPED_TRACE(stage);
    const auto params = model->named_parameters();
    const auto* bias = params.find("model.layers.1.self_attn.k_proj.bias");
    ASSERT_NE(bias, nullptr);
    EXPECT_FALSE(bias->requires_grad());
    EXPECT_TRUE(at::equal(*bias, before));
    if (stage == 0) dequantize_projections(model, at::kFloat);
    if (stage == 1) {
      at::NoGradGuard ng;
      auto adapted = model->forward(tokens, positions);
      merge_adapters(model);
      EXPECT_LE((model->forward(tokens, positions) - adapted).abs().max().item<double>(), 1e-5);
    }
  }
}

}  // namespace
}  // namespace agenttune
