// PEFT adapter folders (io/peft_adapter.h): what we write reads back exactly, and the reader refuses,
// naming the field or tensor, every adapter our projections cannot compute as PEFT does. That the
// files are PEFT's own (peft loads them with equal logits, its tensor names and config keys) is
// checked against peft itself by tests/cli/test_lora_export.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/io/json_file.h"
#include "agenttune/io/peft_adapter.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/lora.h"
#include "agenttune/util/error.h"
#include "test_paths.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

LlamaConfig tiny_config(int64_t layers = 2) { return testing::tiny_llama(64, 32, 48, layers); }

AdapterConfig lora(int64_t rank, std::vector<std::string> targets) {
  AdapterConfig a;
  a.kind = AdapterKind::Lora;
  a.rank = rank;
  a.alpha = 8;
  a.target_modules = std::move(targets);
  return a;
}

// The adapter tensors of `model` for `config`, filled with seeded values (B non-zero, unlike a
// fresh adapter, so every tensor's bytes matter).
NamedTensors random_adapter(const AdapterConfig& config, uint64_t seed) {
  auto model = make_llama(tiny_config(), 1);
  add_adapters(model, config);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  NamedTensors out;
  for (const auto& p : model->named_parameters())
    if (is_adapter_parameter(p.key())) out.emplace_back(p.key(), at::randn(p.value().sizes(), gen, at::kFloat));
  return out;
}

class PeftAdapterFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::scratch_dir() / "adapter";
    config_ = lora(4, {"q_proj", "v_proj", "down_proj"});
    config_.rslora = true;
    config_.dropout = 0.05;
    tensors_ = random_adapter(config_, 7);
    write_peft_adapter(dir_, config_, "/models/base", tensors_, at::kFloat);
  }
  // Rewrites one key of adapter_config.json.
  void set_key(const std::string& key, const nlohmann::json& value) {
    auto j = read_json_file(dir_ / "adapter_config.json");
    j[key] = value;
    std::ofstream(dir_ / "adapter_config.json") << j.dump(2);
  }
  // Rewrites the weights file with `tensors` under the given (PEFT) names.
  void set_tensors(const NamedTensors& peft_named) { write_safetensors(dir_ / "adapter_model.safetensors", peft_named); }
  NamedTensors peft_named() const {
    NamedTensors out;
    for (const auto& [n, t] : tensors_) out.emplace_back(peft_tensor_name(n), t);
    return out;
  }
  void expect_refused(const std::vector<std::string>& fragments) {
    try {
      read_peft_adapter(dir_);
      ADD_FAILURE() << "read_peft_adapter accepted it";
    } catch (const Error& e) {
      for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
  }

  std::string apply_error(int64_t layers) const;

  fs::path dir_;
  AdapterConfig config_;
  NamedTensors tensors_;
};

TEST(PeftTensorNames, MapOursToPeftsAndBack) {
  EXPECT_EQ(peft_tensor_name("model.layers.3.mlp.down_proj.lora_B"),
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(our_tensor_name("base_model.model.model.layers.10.self_attn.q_proj.lora_A.weight", "f"),
            "model.layers.10.self_attn.q_proj.lora_A");
  for (const char* foreign : {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
                              "base_model.model.model.embed_tokens.lora_embedding_A",
                              "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",  // q_proj is attention's
                              "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                              "model.layers.0.self_attn.q_proj.lora_A.weight"})
    EXPECT_THROW(our_tensor_name(foreign, "f"), Error) << foreign;
}

TEST_F(PeftAdapterFolder, ReadsBackWhatWasWrittenExactly) {
  auto a = read_peft_adapter(dir_);
  EXPECT_EQ(a.config.kind, AdapterKind::Lora);
  EXPECT_EQ(a.config.rank, 4);
  EXPECT_EQ(a.config.alpha, 8);
  EXPECT_EQ(a.config.dropout, 0.05);
  EXPECT_TRUE(a.config.rslora);
  EXPECT_EQ(a.config.target_modules, (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(a.base_model, "/models/base");
  ASSERT_EQ(a.tensors.size(), tensors_.size());  // 2 layers x 3 projections x (A, B)
  EXPECT_EQ(a.tensors.size(), 12u);
  std::map<std::string, at::Tensor> back(a.tensors.begin(), a.tensors.end());
  for (const auto& [name, t] : tensors_) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_TRUE(at::equal(back[name], t)) << name;
  }
}

TEST_F(PeftAdapterFolder, ConfigHasPeftsKeysAndTypes) {
  auto j = read_json_file(dir_ / "adapter_config.json");
  EXPECT_EQ(j.at("peft_type"), "LORA");
  EXPECT_EQ(j.at("task_type"), "CAUSAL_LM");
  EXPECT_TRUE(j.at("r").is_number_integer());
  EXPECT_TRUE(j.at("lora_alpha").is_number_integer());  // PEFT types it int
  EXPECT_EQ(j.at("bias"), "none");
  EXPECT_EQ(j.at("fan_in_fan_out"), false);
  EXPECT_EQ(j.at("use_dora"), false);
  EXPECT_EQ(j.at("inference_mode"), true);
  EXPECT_TRUE(j.at("modules_to_save").is_null());
  EXPECT_EQ(j.at("peft_version"), kPeftVersion);
  auto f = SafetensorsFile::open(dir_ / "adapter_model.safetensors");
  EXPECT_NE(f.find("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"), nullptr);
  EXPECT_EQ(f.find("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")->dtype_tag, "F32");
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(PeftAdapterFolder, Bfloat16FileHoldsTheRoundedValues) {
  auto bf = testing::scratch_dir() / "bf16";
  write_peft_adapter(bf, config_, "", tensors_, at::kBFloat16);
  auto a = read_peft_adapter(bf);
  EXPECT_EQ(a.base_model, "");
  EXPECT_EQ(read_json_file(bf / "adapter_config.json").at("base_model_name_or_path"), nullptr);
  std::map<std::string, at::Tensor> back(a.tensors.begin(), a.tensors.end());
  for (const auto& [name, t] : tensors_) EXPECT_TRUE(at::equal(back[name], t.to(at::kBFloat16).to(at::kFloat))) << name;
}

TEST_F(PeftAdapterFolder, RefusesUnsupportedConfigNamingTheField) {
  const std::vector<std::tuple<std::string, nlohmann::json, std::string>> cases = {
      {"bias", "all", "bias = \"all\""},
      {"use_dora", true, "DoRA"},
      {"lora_bias", true, "lora_bias"},
      {"rank_pattern", {{"q_proj", 8}}, "rank_pattern"},
      {"alpha_pattern", {{"v_proj", 4}}, "alpha_pattern"},
      {"modules_to_save", {"lm_head"}, "modules_to_save"},
      {"layers_to_transform", {0}, "layers_to_transform"},
      {"fan_in_fan_out", true, "fan_in_fan_out"},
      {"peft_type", "IA3", "only LoRA"},
      {"task_type", "SEQ_CLS", "task_type"},
      {"init_lora_weights", "pissa", "rewrites the base"},
      {"target_modules", "model.*q_proj", "regular expression"},
      {"target_modules", {"q_proj", "lm_head"}, "\"lm_head\" is not a decoder projection"},
      {"some_future_key", 3, "some_future_key"},
      {"r", 0, "r = 0"},
  };
  for (const auto& [key, value, fragment] : cases) {
    SCOPED_TRACE(key + " = " + value.dump());
    SetUp();
    set_key(key, value);
    expect_refused({"adapter_config.json", fragment});
  }
}

TEST_F(PeftAdapterFolder, AcceptsWhatLeavesLoraAsWeComputeIt) {
  set_key("some_future_key", nullptr);  // unknown but unused
  set_key("init_lora_weights", "gaussian");  // only the initial values differ
  set_key("modules_to_save", nlohmann::json::array());
  // PEFT's "all-linear" expands to full module paths; duplicates collapse to the projection.
  set_key("target_modules", {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "v_proj",
                             "model.layers.0.mlp.down_proj", "down_proj"});
  set_key("lora_alpha", 12.5);
  auto a = read_peft_adapter(dir_);
  EXPECT_EQ(a.config.target_modules, (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(a.config.alpha, 12.5);
}

TEST_F(PeftAdapterFolder, RefusesForeignOrInconsistentTensors) {
  auto named = peft_named();
  named.emplace_back("base_model.model.model.embed_tokens.lora_embedding_A", at::zeros({4, 64}));
  set_tensors(named);
  expect_refused({"adapter_model.safetensors", "lora_embedding_A", "embedding adapter"});

  SetUp();
  named = peft_named();
  named.pop_back();  // the last B
  set_tensors(named);
  expect_refused({"has lora_A but not lora_B"});

  SetUp();
  named = peft_named();
  named[0].second = at::zeros({5, named[0].second.size(1)});  // rank 5 in an r = 4 adapter
  set_tensors(named);
  expect_refused({named[0].first, "[5, ", "r = 4"});

  SetUp();
  set_key("target_modules", {"q_proj", "v_proj"});  // down_proj tensors remain
  expect_refused({"down_proj", "target_modules does not name"});
}

// The error applying the folder to a model of `layers` layers gives ("" if it applies).
std::string PeftAdapterFolder::apply_error(int64_t layers) const {
  auto model = make_llama(tiny_config(layers), 1);
  try {
    apply_peft_adapter(model, read_peft_adapter(dir_), "ADAPTER");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "applied to a model of " << layers << " layers";
  return "";
}

TEST_F(PeftAdapterFolder, ApplyingNeedsEveryAdapterParameterAndNothingElse) {
  auto model = make_llama(tiny_config(), 1);
  apply_peft_adapter(model, read_peft_adapter(dir_), dir_.string());
  for (const auto& p : model->named_parameters())
    if (p.key() == "model.layers.1.self_attn.v_proj.lora_B")
      for (const auto& [n, t] : tensors_)
        if (n == p.key()) EXPECT_TRUE(at::equal(p.value(), t));

  // A model with a third layer: the adapter does not cover it; with one layer, its layer 1 has
  // nowhere to go.
  EXPECT_NE(apply_error(3).find("ADAPTER: no tensor for base_model.model.model.layers.2."), std::string::npos);
  const auto shallow = apply_error(1);
  EXPECT_NE(shallow.find("layers.1."), std::string::npos) << shallow;
  EXPECT_NE(shallow.find("has no adapter parameter in the model (1 layers)"), std::string::npos) << shallow;
}

}  // namespace
}  // namespace agenttune
