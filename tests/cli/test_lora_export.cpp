// Adapters in and out through the real binary, with peft as the oracle (tests/cli/py/peft_oracle.py):
// a LoRA run's `export --adapter-only` folder is what peft itself saves (tensor names, shapes,
// dtypes, config keys and values) and loads in peft with our logits; its merged export equals
// peft's merge_and_unload(); `generate --adapter` on a folder peft wrote gives transformers + peft's
// greedy ids (LoRA and rsLoRA).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "agenttune/chat/template.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The base's architecture equals TinyRun's defaults, so the run's model.shape matches init_from.
constexpr const char* kBaseYaml = R"(model:
  vocab_size: 4096
  hidden_size: 64
  intermediate_size: 128
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 2
  max_position_embeddings: 256
seed: 11
)";

// The last line of `out` that is a JSON object (logs share the stream); null if none.
json last_json_line(const std::string& out) {
  json found;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') found = json::parse(line, nullptr, false);
  return found;
}

// `[python] peft_oracle.py args` -> its JSON line; a non-zero exit (a failed check) fails the test
// unless `measure_only` (the caller judges the figures itself).
json oracle(const std::string& args, bool measure_only = false) {
  std::string out;
  const int code = testing::run_command(testing::venv_python().string() + " " +
                                            (testing::source_dir() / "tests/cli/py/peft_oracle.py").string() + " " +
                                            args + " 2>/dev/null",
                                        &out);
  if (!measure_only) EXPECT_EQ(code, 0) << out;
  return last_json_line(out);
}

// The number after `label` in a log.
double number_after(const std::string& log, const std::string& label) {
  auto at = log.find(label);
  return at == std::string::npos ? -1 : std::stod(log.substr(at + label.size()));
}

class LoraExport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python with transformers and peft";
    root_ = testing::scratch_dir();
    std::ofstream(root_ / "base.yaml") << kBaseYaml;
    auto init = testing::agenttune("init --config " + (root_ / "base.yaml").string() + " --out " + base().string());
    ASSERT_EQ(init.rc, 0) << init.out;
  }
  fs::path base() const { return root_ / "base"; }
  fs::path checkpoints() const { return root_ / "run" / "run" / "checkpoints"; }

  // Two steps of a LoRA run on the base (lr 1e-2: B moves off zero, so the adapter matters).
  void train(const std::string& adapter_sets) {
    testing::TinyRun r;
    r.max_steps = 2;
    r.checkpoint = "{interval: 2, keep_last: 1}";
    r.code_docs = 40;
    r.text_docs = 8;
    fs::create_directories(root_ / "run");
    auto cfg = testing::write_tiny_run(root_ / "run", r);
    auto t = testing::agenttune("train --config " + cfg.string() + " --set model.init_from=" + base().string() +
                                " " + adapter_sets);
    ASSERT_EQ(t.rc, 0) << t.out;
  }
  testing::Run export_to(const fs::path& out, const std::string& extra, const std::string& env = "") {
    return testing::agenttune("export --checkpoint " + checkpoints().string() + " --out " + out.string() + " " + extra,
                              env);
  }

  fs::path root_;
};

constexpr const char* kLora =
    "--set model.adapter.kind=lora --set model.adapter.rank=4 --set model.adapter.alpha=8 "
    "--set model.adapter.init_seed=5";

TEST_F(LoraExport, AdapterFolderIsPeftsOwnAndLoadsInPeftWithOurLogits) {
  train(kLora);
  auto r = export_to(root_ / "adapter", "--adapter-only --verify transformers");
  ASSERT_EQ(r.rc, 0) << r.out;
  // Our reader: every tensor exact (float32 by default, as PEFT saves), logits identical.
  EXPECT_NE(r.out.find("every adapter tensor equal to the checkpoint's rounded to float32"), std::string::npos) << r.out;
  EXPECT_EQ(number_after(r.out, "max |Δlogit| = "), 0.0) << r.out;
  // peft over the base: its own names for all 2 layers x 7 projections x (A, B), logits within 1e-4.
  EXPECT_NE(r.out.find("with PEFT's own names for all 28 tensors"), std::string::npos) << r.out;
  const auto peft_at = r.out.find("export check: peft");
  ASSERT_NE(peft_at, std::string::npos) << r.out;
  const double d = number_after(r.out.substr(peft_at), "max |Δlogit| = ");
  EXPECT_GE(d, 0.0);
  EXPECT_LE(d, number_after(r.out.substr(peft_at), "(tolerance ")) << r.out;
  EXPECT_NE(r.out.find("a PEFT adapter folder in float32"), std::string::npos) << r.out;

  // What peft itself saves for this LoraConfig: the same tensors and config, key for key.
  auto same = oracle("same-as-peft " + base().string() + " " + (root_ / "adapter").string());
  EXPECT_EQ(same["tensors"], 28) << same.dump();
  EXPECT_EQ(same["problems"], json::array()) << same.dump();
  auto config = json::parse(std::ifstream(root_ / "adapter" / "adapter_config.json"));
  EXPECT_EQ(config["base_model_name_or_path"], base().string());
}

TEST_F(LoraExport, MergedExportEqualsPeftsMergeAndUnload) {
  train(kLora + std::string(" --set model.adapter.rslora=true --set model.adapter.alpha=6"));
  // (transformers loads the merged folder in the oracle below: no --verify transformers here)
  auto merged = export_to(root_ / "merged", "--dtype float32");
  ASSERT_EQ(merged.rc, 0) << merged.out;
  EXPECT_NE(merged.out.find("the merged float32 model computes what base + adapters did"), std::string::npos)
      << merged.out;
  EXPECT_NE(merged.out.find("a model with the adapters merged into the base"), std::string::npos) << merged.out;
  EXPECT_FALSE(fs::exists(root_ / "merged" / "adapter_config.json"));
  ASSERT_EQ(export_to(root_ / "adapter", "--adapter-only").rc, 0);

  auto m = oracle("merged " + base().string() + " " + (root_ / "adapter").string() + " " +
                  (root_ / "merged").string());
  ASSERT_TRUE(m.contains("logits_max_rel_diff")) << m.dump();
  EXPECT_LE(m["logits_max_rel_diff"].get<double>(), 1e-5) << m.dump();
  EXPECT_LE(m["weights_max_rel_diff"].get<double>(), 1e-6) << m.dump();
  EXPECT_GE(m["adapter_moved_logits_rel"].get<double>(), 1e-3) << "the adapters are still ~0: proves nothing";
}

// QLoRA: the adapters go into (or, as a folder, over) the dequantised NF4 base the run trained
// against; both exports pass their checks and say which base it is.
TEST_F(LoraExport, QloraExportsUseTheDequantisedBase) {
  train("--set model.adapter.kind=qlora --set model.adapter.rank=4 --set model.adapter.alpha=8");
  auto merged = export_to(root_ / "merged", "--dtype float32");
  ASSERT_EQ(merged.rc, 0) << merged.out;
  EXPECT_NE(merged.out.find("QLoRA run: the adapters are merged into the dequantised NF4 base"), std::string::npos)
      << merged.out;
  EXPECT_NE(merged.out.find("the merged float32 model computes what base + adapters did"), std::string::npos)
      << merged.out;
  auto folder = export_to(root_ / "adapter", "--adapter-only");
  ASSERT_EQ(folder.rc, 0) << folder.out;
  EXPECT_NE(folder.out.find("QLoRA run: the adapter is a LoRA adapter of the dequantised NF4 base"), std::string::npos)
      << folder.out;
  // The merged projections are the NF4 round trip plus the adapter, not the original weights plus it
  // (what peft's merge_and_unload gives over the original base).
  auto m = oracle("merged " + base().string() + " " + (root_ / "adapter").string() + " " + (root_ / "merged").string(),
                  /*measure_only=*/true);
  ASSERT_TRUE(m.contains("weights_max_rel_diff")) << m.dump();
  EXPECT_GT(m["weights_max_rel_diff"].get<double>(), 1e-3) << m.dump();
}

TEST_F(LoraExport, CorruptAdapterTensorFailsTheCheckAndLeavesNothing) {
  train(kLora);
  auto r = export_to(root_ / "adapter", "--adapter-only --dtype bfloat16",
                     "AGENTTUNE_TEST_CORRUPT_EXPORT=base_model.model.model.layers.1.mlp.up_proj.lora_B.weight");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("export check failed, nothing written to " + (root_ / "adapter").string()), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("differ from the checkpoint's rounded to bfloat16, first "
                       "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(root_ / "adapter"));
}

TEST_F(LoraExport, RefusesWhatAnAdapterCannotHoldAndABaseThatChanged) {
  train("");  // full fine-tuning: nothing to export as an adapter
  testing::expect_clean_error(export_to(root_ / "a", "--adapter-only"),
                              {"--adapter-only", "full fine-tuning checkpoint", "without --adapter-only"});
  EXPECT_FALSE(fs::exists(root_ / "a"));
  fs::remove_all(root_ / "run");
  train(kLora);
  testing::expect_clean_error(export_to(root_ / "a", "--adapter-only --template chatml"),
                              {"--adapter-only", "--template belong to a model folder"});
  testing::expect_clean_error(export_to(root_ / "a", "--adapter-only --max-shard-mb 1"),
                              {"--max-shard-mb", "single adapter_model.safetensors"});
  EXPECT_FALSE(fs::exists(root_ / "a"));

  // The base changed since the run (re-initialised with another seed): neither export goes ahead.
  fs::remove_all(base());
  ASSERT_EQ(testing::agenttune("init --config " + (root_ / "base.yaml").string() + " --set seed=12 --out " +
                               base().string()).rc,
            0);
  for (const char* extra : {"--adapter-only", ""})
    testing::expect_clean_error(export_to(root_ / "a", extra),
                                {"is not the one these adapters were trained on", "model.init_from " + base().string()});
  EXPECT_FALSE(fs::exists(root_ / "a"));
}

// generate --adapter on an adapter peft itself wrote (A and B random): our greedy ids are
// transformers + peft's, and differ from the base's own.
void expect_peft_greedy_ids(const fs::path& base, const fs::path& adapter, const std::string& make_args) {
  const std::string ids = "1,17,300,4000,42,9,1234,77";
  auto want = oracle("make " + base.string() + " " + adapter.string() + " " + make_args + " " + ids + " 12");
  auto ours = testing::agenttune("generate --model " + base.string() + " --adapter " + adapter.string() +
                                 " --prompt-ids " + ids + " --max-new-tokens 12 --json");
  ASSERT_EQ(ours.rc, 0) << ours.out;
  auto got = last_json_line(ours.out);
  ASSERT_EQ(want["new_ids"].size(), 12u) << want.dump();
  EXPECT_EQ(got["new_ids"], want["new_ids"]) << ours.out;
  auto plain = testing::agenttune("generate --model " + base.string() + " --prompt-ids " + ids +
                                  " --max-new-tokens 12 --json");
  ASSERT_EQ(plain.rc, 0) << plain.out;
  EXPECT_NE(last_json_line(plain.out)["new_ids"], got["new_ids"]) << "the adapter changed nothing: the test proves nothing";
}

TEST_F(LoraExport, GenerateWithAPeftWrittenLoraAdapterGivesPeftsGreedyIds) {
  // rank 4, alpha 8, plain LoRA scaling, all seven projections
  expect_peft_greedy_ids(base(), root_ / "peft", "4 8 0 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj 1");
}

TEST_F(LoraExport, GenerateWithAPeftWrittenRsLoraAdapterGivesPeftsGreedyIds) {
  // rank 8, alpha 12, rsLoRA scaling (alpha / sqrt(r)), three projections
  expect_peft_greedy_ids(base(), root_ / "peft", "8 12 1 q_proj,v_proj,down_proj 2");
}

// chat --adapter: the reply to a first turn is transformers + peft's greedy continuation of the
// template's prompt (computed here with the library's renderer), not the base's.
TEST_F(LoraExport, ChatWithAnAdapterRepliesAsPeftDoes) {
  const auto tokenizer = testing::shared_fixture("llama2-tokenizer.model");
  if (tokenizer.empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto model = root_ / "chat_model";  // configs/tiny/model.yaml copies the tokenizer in
  auto init = testing::agenttune("init --config " + (testing::source_dir() / "configs/tiny/model.yaml").string() +
                                 " --out " + model.string());
  ASSERT_EQ(init.rc, 0) << init.out;
  const std::string message = "How many .log files are in /var/tmp?";
  Conversation c;
  c.turns.push_back({Role::User, message, std::nullopt, ""});
  Tokenizer tok = Tokenizer::load(model / "tokenizer.model");
  std::string ids;
  for (int32_t id : make_template("agentlm")->generation_prompt_ids(c, tok)) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  auto want = oracle("make " + model.string() + " " + (root_ / "peft").string() +
                     " 4 8 0 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj 3 " + ids + " 6");

  std::ofstream(root_ / "input.txt") << message << "\n";
  std::string out;
  auto chat = [&](const std::string& adapter) {
    EXPECT_EQ(testing::run_command(testing::agenttune_bin() + " chat --json --max-new-tokens 6 --template agentlm " +
                                       "--model " + model.string() + adapter + " < " + (root_ / "input.txt").string() +
                                       " 2>/dev/null",
                                   &out),
              0)
        << out;
    return last_json_line(out);
  };
  auto reply = chat(" --adapter " + (root_ / "peft").string());
  EXPECT_EQ(reply["new_ids"], want["new_ids"]) << out;
  EXPECT_NE(chat("")["new_ids"], reply["new_ids"]) << "the adapter changed nothing: the test proves nothing";
}

TEST_F(LoraExport, GenerateRefusesAnAdapterWeCannotComputeNamingTheField) {
  const auto adapter = root_ / "peft";
  oracle("make " + base().string() + " " + adapter.string() + " 4 8 0 q_proj,v_proj 1");
  auto j = json::parse(std::ifstream(adapter / "adapter_config.json"));
  j["use_dora"] = true;
  std::ofstream(adapter / "adapter_config.json") << j.dump(2);
  testing::expect_clean_error(testing::agenttune("generate --model " + base().string() + " --adapter " +
                                                 adapter.string() + " --prompt-ids 1,2,3"),
                              {(adapter / "adapter_config.json").string(), "use_dora = true", "DoRA"});
}

}  // namespace
}  // namespace agenttune
