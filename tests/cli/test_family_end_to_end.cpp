// A Llama-3-shaped and a Qwen2.5-shaped model through the whole tool with the families' real
// byte-level BPE tokenizers (.deps/tokenizers, made by the ctest fixture oracle.bpe_tokenizers, as
// the tokenizer tests use them): `init` with the tokenizer folder, `prepare` the bundled corpora,
// `train` (the Llama-3 run SIGKILLed after a checkpoint and resumed bit-exactly), `export --verify
// transformers` (transformers loads the model and the copied tokenizer.json and gives our ids), and
// transformers' greedy ids on the export equal `agenttune generate`'s, also when generation stops
// at an id of an eos_token_id list (Llama-3.1-Instruct's form, kept from the initial folder).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/util/files.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Family {
  std::string tokenizer;   // .deps/tokenizers/<name>
  std::string model_keys;  // init's model: block, beside kTinyShape's keys
  std::vector<int64_t> eos;  // written into the initial folder's config.json as a list
};

// Two layers of width 32, one KV head: the big vocabularies dominate the parameters (~8M) even so.
constexpr const char* kTinyShape = R"(  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 2
  num_attention_heads: 2
  num_key_value_heads: 1
  max_position_embeddings: 256
)";

// Llama-3.1 in miniature: its vocabulary, θ 5e5, llama3 RoPE whose original context (32) the
// training sequences (64) pass, untied head (the sharded engine refuses tied ones).
const Family kLlama3{"llama3", R"(  model_type: llama
  vocab_size: 128256
  rope_theta: 500000.0
  rope_scaling_type: llama3
  rope_scaling_factor: 8.0
  rope_low_freq_factor: 1.0
  rope_high_freq_factor: 4.0
  rope_original_max_position_embeddings: 32
  bos_token_id: 128000
  eos_token_id: 128001
)",
                     {128001, 128008, 128009}};

// Qwen2.5 in miniature: q/k/v biases, θ 1e6, the 0.5B's 151936 rows (more than the tokenizer's 151665).
const Family kQwen25{"qwen2.5", R"(  model_type: qwen2
  vocab_size: 151936
  rope_theta: 1000000.0
  rms_norm_eps: 1.0e-6
  bos_token_id: 151643
  eos_token_id: 151643
)",
                     {151643, 151645}};

constexpr const char* kPrompt = "def greet(name):\n    return f\"Hello, {name}!\"  # 東京 🙂";

std::string ok(const std::string& args) {
  auto r = testing::agenttune(args);
  EXPECT_EQ(r.rc, 0) << args << "\n" << r.out;
  return r.out;
}

// The eos_token_id list, as Llama-3.1-Instruct's folders hold it, in config.json and
// generation_config.json.
void set_eos_list(const fs::path& dir, const std::vector<int64_t>& eos) {
  for (const char* name : {"config.json", "generation_config.json"}) {
    auto j = read_json_file(dir / name);
    j["eos_token_id"] = eos;
    write_file_atomic(dir / name, j.dump(2));
  }
}

void write_configs(const fs::path& root, const fs::path& tok, const fs::path& model) {
  const auto corpora = testing::source_dir() / "data" / "corpora";
  std::ofstream(root / "prepare.yaml") << "tokenizer: " << tok.string() << "\ncorpora:\n"
                                       << "  - {name: code, inputs: [" << (corpora / "code").string()
                                       << "], text_field: content, output: " << (root / "code").string() << "}\n"
                                       << "  - {name: text, inputs: [" << (corpora / "text").string()
                                       << "], text_field: text, output: " << (root / "text").string() << "}\n"
                                       << "shard_tokens: 65536\n";
  std::ofstream(root / "train.yaml") << "output_dir: run\nmodel: {init_from: " << model.string() << "}\n"
                                     << "data:\n  sources:\n    - {name: code, path: " << (root / "code").string()
                                     << ", weight: 3}\n    - {name: text, path: " << (root / "text").string()
                                     << ", weight: 1}\n  seq_len: 64\n  tokenizer: " << tok.string() << "\n"
                                     << R"(train: {max_steps: 4, micro_batch_size: 2, global_batch_sequences: 4, lr: 1.0e-2,
        warmup_steps: 1}
checkpoint: {interval: 2, keep_last: 2}
metrics: {tensorboard: false}
)";
}

std::string train_cmd(const fs::path& root, const fs::path& out, const std::string& extra = "") {
  return testing::agenttune_bin() + " train --config " + (root / "train.yaml").string() +
         " --no-progress --set output_dir=" + out.string() + " " + extra + " > " + out.string() + ".log 2>&1";
}

// The JSON line a command printed among its log lines.
json json_line(const std::string& out) {
  std::istringstream in(out);
  json j;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') j = json::parse(line);
  EXPECT_TRUE(j.is_object()) << out;
  return j.is_object() ? j : json{{"prompt_ids", nullptr}, {"new_ids", json::array()}, {"stopped", false}};
}

// Ours: `agenttune generate --json`; theirs: transformers' greedy generate on the same folder.
json ours(const fs::path& hf, int n) {
  auto out = ok("generate --model " + hf.string() + " --prompt '" + std::string(kPrompt) + "' --max-new-tokens " +
                std::to_string(n) + " --json");
  return json_line(out);
}

json theirs(const fs::path& hf, int n) {
  std::string out;
  const int rc = testing::run_command(testing::venv_python().string() + " " +
                                          (testing::source_dir() / "tests/cli/py/family_generate_oracle.py").string() +
                                          " " + hf.string() + " '" + kPrompt + "' " + std::to_string(n) + " 2>&1",
                                      &out);
  EXPECT_EQ(rc, 0) << out;
  return json_line(out);
}

void run_family(const Family& f, bool kill_and_resume) {
  const auto root = testing::scratch_dir();
  const auto tok = testing::source_dir() / ".deps" / "tokenizers" / f.tokenizer;
  ASSERT_TRUE(fs::exists(tok / "tokenizer.json")) << tok << " missing: run ctest -R oracle.bpe_tokenizers first";
  std::ofstream(root / "init.yaml") << "model:\n"
                                    << f.model_keys << kTinyShape << "seed: 5\ntokenizer: " << tok.string() << "\n";
  ok("init --config " + (root / "init.yaml").string() + " --out " + (root / "init").string());
  EXPECT_EQ(read_text_file(root / "init" / "tokenizer.json"), read_text_file(tok / "tokenizer.json"));
  set_eos_list(root / "init", f.eos);
  write_configs(root, tok, root / "init");
  ok("prepare --no-progress --config " + (root / "prepare.yaml").string());

  const auto run = root / "full";
  ASSERT_EQ(testing::run_command(train_cmd(root, run)), 0) << read_text_file(run.string() + ".log");
  const auto losses = testing::run_losses(run);
  ASSERT_EQ(losses.size(), 4u);
  EXPECT_LT(losses.at(4), losses.at(1)) << "the loss did not fall";
  if (kill_and_resume) {
    const auto killed = root / "killed";
    testing::kill_after_checkpoint(train_cmd(root, killed), killed / "checkpoints", 2, 4, 120);
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_EQ(testing::run_command(train_cmd(root, killed, "--resume auto")), 0)
        << read_text_file(killed.string() + ".log");
    for (auto [step, loss] : losses) EXPECT_EQ(testing::run_losses(killed).at(step), loss) << "step " << step;
    auto a = SafetensorsFile::open(run / "checkpoints/step_00000004/rank_00000.safetensors");
    auto b = SafetensorsFile::open(killed / "checkpoints/step_00000004/rank_00000.safetensors");
    for (const auto& e : a.entries()) EXPECT_TRUE(at::equal(a.tensor(e.name), b.tensor(e.name))) << e.name;
  }

  // The run's tokenizer (data.tokenizer, the folder) travels into the export as it is.
  const auto hf = root / "hf";
  const auto exported = ok("export --dtype float32 --verify transformers --checkpoint " +
                           (run / "checkpoints").string() + " --out " + hf.string());
  EXPECT_NE(exported.find("its tokenizer gives our"), std::string::npos) << exported;
  EXPECT_FALSE(fs::exists(hf / "tokenizer.model"));
  EXPECT_EQ(read_text_file(hf / "tokenizer.json"), read_text_file(tok / "tokenizer.json"));
  EXPECT_EQ(read_json_file(hf / "tokenizer_config.json"), read_json_file(tok / "tokenizer_config.json"));
  // The eos_token_id list of the initial folder, kept through training and written back.
  EXPECT_EQ(read_json_file(hf / "config.json").at("eos_token_id"), json(f.eos));
  EXPECT_EQ(read_json_file(hf / "generation_config.json").at("eos_token_id"), json(f.eos));

  // ChatML's added tokens follow a SentencePiece vocabulary; the byte-level file has no <pad> to write.
  testing::expect_clean_error(
      testing::agenttune("export --template chatml --verify none --checkpoint " + (run / "checkpoints").string() +
                         " --out " + (root / "hf_chatml").string()),
      {"export --template chatml: ", "tokenizer.json has no token <pad>, and a byte-level BPE tokenizer gets no new"});
  EXPECT_FALSE(fs::exists(root / "hf_chatml"));

  // Greedy decoding stops at any id of the list. Without a stop it runs 8 tokens (the last row,
  // spare or reserved, is never emitted); with the list it is their prefix up to its first list id.
  const json stopped_by_list = ours(hf, 8);
  const int64_t unused = read_hf_config(hf / "config.json").vocab_size - 1;
  set_eos_list(hf, {unused});
  const json free_run = ours(hf, 8);
  ASSERT_EQ(free_run.at("new_ids").size(), 8u) << free_run.dump();
  const auto prefix_to = [&](const std::vector<int64_t>& stops) {
    std::vector<int64_t> ids;
    for (const auto& id : free_run.at("new_ids")) {
      ids.push_back(id.get<int64_t>());
      if (std::find(stops.begin(), stops.end(), ids.back()) != stops.end()) break;
    }
    return json(ids);
  };
  EXPECT_EQ(stopped_by_list.at("new_ids"), prefix_to(f.eos));

  // transformers on the same folder, with a list whose second id is the free run's third token:
  // the same prompt ids (Llama-3's BOS from the post-processor, none for Qwen), the same tokens, the
  // same stop.
  const std::vector<int64_t> eos = {unused, free_run.at("new_ids")[2].get<int64_t>()};
  set_eos_list(hf, eos);
  EXPECT_EQ(read_hf_config(hf / "config.json").eos_token_ids(), eos);
  const json c = ours(hf, 8), d = theirs(hf, 8);
  EXPECT_EQ(c.at("prompt_ids"), d.at("prompt_ids"));
  EXPECT_EQ(c.at("new_ids"), prefix_to(eos));
  EXPECT_TRUE(c.at("stopped").get<bool>());
  EXPECT_EQ(d.at("new_ids"), c.at("new_ids"));
}

TEST(FamilyEndToEnd, Llama3InitPrepareTrainResumeExportAndGenerateAsTransformers) { run_family(kLlama3, true); }

TEST(FamilyEndToEnd, Qwen25InitPrepareTrainExportAndGenerateAsTransformers) { run_family(kQwen25, false); }

}  // namespace
}  // namespace agenttune
