// A Llama-3-shaped and a Qwen2.5-shaped model through the whole tool with the families' real
// byte-level BPE tokenizers (.deps/tokenizers, made by the ctest fixture oracle.bpe_tokenizers, as
// the tokenizer tests use them): `init` with the tokenizer folder, `prepare` the bundled corpora,
// `train` (the Llama-3 run SIGKILLed after a checkpoint and resumed bit-exactly), `export --verify
// transformers` (transformers loads the model and the copied tokenizer.json and gives our ids), and
// transformers' greedy ids on the export equal `agenttune generate`'s, also when generation stops
// at an id of an eos_token_id list (Llama-3.1-Instruct's form, kept from the initial folder).
// The bundled ToolBench and Agent-FLAN samples are prepared with the family's template and
// tool_calls: native, and the trained spans of those shards read back as the eval scorer's native
// parser reads a reply (hermes for Qwen, llama3_json for Llama-3) give exactly the prepared calls.
// Tied heads (Llama-3.2 1B/3B, Qwen2.5 0.5B-3B) export without an lm_head.weight, as their Hugging
// Face folders hold them; the Llama-3.2 one trains on two ranks (the table sharded, gathered for the
// embedding and again for the head; 2 ranks = 1 rank is Sharded.*_tied's) and resumes there to the bit.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "agenttune/chat/template.h"
#include "agenttune/config/load.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/data/token_shards.h"
#include "agenttune/eval/action_score.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/util/files.h"
#include "../chat/bpe_chat_oracle.h"
#include "../chat/chat_cases.h"
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
  bool tied = false;         // tie_word_embeddings (in model_keys too)
  std::string chat_template;  // the family's, for the agent data
};

// Two layers of width 32, one KV head: the big vocabularies dominate the parameters (~8M) even so.
constexpr const char* kTinyShape = R"(  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 2
  num_attention_heads: 2
  num_key_value_heads: 1
  max_position_embeddings: 512
)";

// Llama-3.1 in miniature: its vocabulary, θ 5e5, llama3 RoPE whose original context (32) the
// training sequences (64) pass, untied head as the 8B's.
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
                     {128001, 128008, 128009},
                     false,
                     "llama-3"};

// Llama-3.2 1B in miniature: the 3.1 vocabulary and RoPE (factor 32) with the head tied to the embedding.
const Family kLlama32{"llama3", R"(  model_type: llama
  vocab_size: 128256
  rope_theta: 500000.0
  rope_scaling_type: llama3
  rope_scaling_factor: 32.0
  rope_low_freq_factor: 1.0
  rope_high_freq_factor: 4.0
  rope_original_max_position_embeddings: 32
  tie_word_embeddings: true
  bos_token_id: 128000
  eos_token_id: 128001
)",
                      {128001, 128008, 128009},
                      true,
                      "llama-3"};

// Qwen2.5 0.5B in miniature: q/k/v biases, θ 1e6, its 151936 rows (more than the tokenizer's
// 151665), its tied head.
const Family kQwen25{"qwen2.5", R"(  model_type: qwen2
  vocab_size: 151936
  rope_theta: 1000000.0
  rms_norm_eps: 1.0e-6
  tie_word_embeddings: true
  bos_token_id: 151643
  eos_token_id: 151643
)",
                     {151643, 151645},
                     true,
                     "qwen2.5"};

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

// The bundled ToolBench and Agent-FLAN samples in the family's native tool-call form.
constexpr const char* kAgentData[][3] = {{"toolbench", "toolbench_sft.json", "toolbench"},
                                         {"agentflan", "agentflan.jsonl", "agentflan"}};

void write_configs(const fs::path& root, const fs::path& tok, const fs::path& model, const std::string& tmpl) {
  const auto corpora = testing::source_dir() / "data" / "corpora";
  {
    std::ofstream sft(root / "agent_prepare.yaml");
    sft << "tokenizer: " << tok.string() << "\ntemplate: " << tmpl << "\nmax_seq_len: 4096\nseed: 0\ndatasets:\n";
    for (const auto& d : kAgentData)
      sft << "  - {name: " << d[0] << ", paths: [" << (testing::source_dir() / "data" / "samples" / d[1]).string()
          << "], format: " << d[2] << ", output: " << (root / d[0]).string() << ", tool_calls: native}\n";
  }
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

// The rank files of two runs at `step`, bit for bit.
void expect_equal_checkpoints(const fs::path& a_run, const fs::path& b_run, int ranks, int step = 4) {
  char dir[32];
  std::snprintf(dir, sizeof dir, "step_%08d", step);
  for (int r = 0; r < ranks; ++r) {
    const std::string file = "checkpoints/" + std::string(dir) + "/rank_0000" + std::to_string(r) + ".safetensors";
    auto a = SafetensorsFile::open(a_run / file), b = SafetensorsFile::open(b_run / file);
    for (const auto& e : a.entries()) EXPECT_TRUE(at::equal(a.tensor(e.name), b.tensor(e.name))) << file << " " << e.name;
  }
}

// SFT on the native-call shards of agent_prepare.yaml (the agent data in the family's tool-call
// form): 2 steps train, and a run stopped after its step-1 checkpoint and resumed ends with the
// same losses and bits.
void sft_on_native_calls_trains_and_resumes(const fs::path& root, const fs::path& tok, const fs::path& model) {
  {
    std::ofstream sft(root / "sft.yaml");
    sft << "output_dir: sft\nmodel: {init_from: " << model.string() << "}\ndata:\n  sources:\n";
    for (const auto& d : kAgentData) sft << "    - {name: " << d[0] << ", path: " << (root / d[0]).string() << "}\n";
    sft << "  seq_len: 512\n  tokenizer: " << tok.string() << "\n"
        << "train: {max_steps: 2, micro_batch_size: 1, global_batch_sequences: 2, lr: 1.0e-2, warmup_steps: 1}\n"
        << "checkpoint: {interval: 1, keep_last: 2}\nmetrics: {tensorboard: false}\n";
  }
  const auto sft_cmd = [&](const fs::path& out, const std::string& extra) {
    return testing::agenttune_bin() + " train --config " + (root / "sft.yaml").string() +
           " --no-progress --set output_dir=" + out.string() + " " + extra + " > " + out.string() + ".log 2>&1";
  };
  const auto run = root / "sft_full", stopped = root / "sft_stopped";
  ASSERT_EQ(testing::run_command(sft_cmd(run, "")), 0) << read_text_file(run.string() + ".log");
  const auto losses = testing::run_losses(run);
  ASSERT_EQ(losses.size(), 2u) << read_text_file(run.string() + ".log");
  for (const char* extra : {"--exit-after-steps 1", "--resume auto"})
    ASSERT_EQ(testing::run_command(sft_cmd(stopped, extra)), 0) << read_text_file(stopped.string() + ".log");
  for (auto [step, loss] : losses) EXPECT_EQ(testing::run_losses(stopped).at(step), loss) << "step " << step;
  expect_equal_checkpoints(run, stopped, 1, 2);
}

// A run on two ranks stopped after its step-2 checkpoint and resumed there ends with `run`'s bits.
void resume_on_two_ranks_matches(const fs::path& root, const fs::path& run) {
  const auto stopped = root / "two_stopped";
  for (const char* extra : {"--exit-after-steps 2", "--resume auto"})
    ASSERT_EQ(testing::run_command(testing::torchrun(2) + train_cmd(root, stopped, extra)), 0)
        << read_text_file(stopped.string() + ".log");
  for (auto [step, loss] : testing::run_losses(run)) EXPECT_EQ(testing::run_losses(stopped).at(step), loss) << "step " << step;
  expect_equal_checkpoints(run, stopped, 2);
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

// What an SFT run on the agent shards trains on (the tiny runs here train on the corpora: the
// conversations, ~450 tokens with the tool list, outgrow their 64-token rows): every assistant turn's trained span of the prepared
// shards, decoded, read by the eval scorer's native parser (vLLM's hermes rules for Qwen's
// <tool_call> blocks, llama3_json's for Llama-3's JSON) gives exactly the turn's structured calls,
// each to an offered tool with JSON-object arguments. `cli_out` is `agenttune prepare`'s output.
void expect_trained_calls_parse(const fs::path& config, const std::string& cli_out) {
  const auto cfg = load_config<SftPrepareConfig>(config);
  const auto tmpl = make_template(cfg.chat_template);
  Tokenizer tok = Tokenizer::load(cfg.tokenizer);
  prepare_tokenizer(*tmpl, tok);
  std::map<std::string, std::set<std::vector<int32_t>>> written;  // dataset -> its shards' documents
  for (const auto& d : cfg.datasets) {
    auto data = TokenDataset::open(d.output);
    for (int64_t i = 0; i < data.num_documents(); ++i) {
      std::vector<int64_t> ids(data.document_length(i));
      data.read(i, 0, static_cast<int64_t>(ids.size()), ids.data());
      written[d.name].insert(std::vector<int32_t>(ids.begin(), ids.end()));
    }
  }
  // dataset -> structured calls in all turns, in trained turns, and read back from those equal to them
  std::map<std::string, int64_t> calls, trained_calls, parsed;
  std::optional<std::pair<Conversation, RenderedSample>> first_native;  // for the template oracle
  SftPrepareHooks hooks;
  hooks.write = false;
  hooks.on_kept = [&](const std::string& dataset, const Conversation& c, const RenderedSample& s) {
    EXPECT_TRUE(written[dataset].count(s.ids)) << c.id << ": not a document of the prepared shards";
    if (!first_native && !c.tools.empty()) first_native.emplace(c, s);
    std::vector<std::vector<int32_t>> spans;  // runs of trained tokens, one per trained assistant turn
    for (size_t i = 0; i < s.ids.size(); ++i)
      if (s.trained[i]) {
        if (i == 0 || !s.trained[i - 1]) spans.emplace_back();
        spans.back().push_back(s.ids[i]);
      }
    Conversation history = c;
    history.turns.clear();
    size_t span = 0;
    for (const Turn& t : c.turns) {
      calls[dataset] += static_cast<int64_t>(t.tool_calls.size());
      if (t.role == Role::Assistant && t.loss.value_or(true) && span < spans.size()) {
        const std::string reply = tok.decode(spans[span++]);
        if (!t.tool_calls.empty()) {
          trained_calls[dataset] += static_cast<int64_t>(t.tool_calls.size());
          const auto score = eval::score_action(AgentTask::ToolBench, history, reply, eval::scored_text(t));
          EXPECT_EQ(score.syntax, "native") << c.id;
          EXPECT_TRUE(score.format_valid && score.calls_tool) << c.id << ": " << score.why << "\n" << reply;
          EXPECT_EQ(score.tool_valid, std::optional<bool>(true)) << c.id << ": " << score.why << "\n" << reply;
          EXPECT_EQ(score.args_valid, std::optional<bool>(true)) << c.id << ": " << score.why << "\n" << reply;
          EXPECT_TRUE(score.action_match) << c.id << ": " << score.reply_action << " vs " << score.gold_action;
          for (const ToolCall& call : t.tool_calls) EXPECT_TRUE(json::parse(call.arguments).is_object()) << c.id;
          if (score.action_match) parsed[dataset] += static_cast<int64_t>(t.tool_calls.size());
        }
      }
      history.turns.push_back(t);
    }
    EXPECT_EQ(span, spans.size()) << c.id << ": trained spans outside the assistant turns";
  };
  const auto report = prepare_sft(cfg, hooks);
  int64_t native = 0, total_parsed = 0;
  for (const auto& d : report.datasets) {
    EXPECT_NE(cli_out.find(d.tool_calls_line()), std::string::npos) << d.tool_calls_line() << "\n" << cli_out;
    native += d.tool_calls.get("native");
    EXPECT_EQ(calls[d.name], d.tool_calls.get("calls")) << d.name << ": " << d.tool_calls_line();
    EXPECT_EQ(parsed[d.name], trained_calls[d.name]) << d.name;
    total_parsed += parsed[d.name];
  }
  EXPECT_GT(native, 0);
  EXPECT_GT(total_parsed, 0);

  // The family's published template (transformers' apply_chat_template, tools= and tool_calls as
  // transformers documents them) gives a converted conversation the ids prepare wrote.
  ASSERT_TRUE(first_native.has_value());
  const auto& [conv, sample] = *first_native;
  const auto published = testing::source_dir() / "tests/chat/fixtures" /
                         (cfg.chat_template == "llama-3" ? "llama-3.1-instruct.jinja" : "qwen2.5-instruct.jinja");
  const json out = testing::run_bpe_chat_oracle(json::array(
      {{{"tokenizer", cfg.tokenizer.string()},
        {"published", published.string()},
        {"jinja", tmpl->jinja()},
        {"tools", testing::tools_json(conv)},
        {"messages", testing::messages_json(conv)},
        {"gen_messages", testing::messages_json(testing::before_last_assistant(conv))}}}),
      config.parent_path() / "template_oracle");
  ASSERT_EQ(out.at("cases").size(), 1u) << out.dump();
  const json& o = out["cases"][0];
  EXPECT_EQ(o.at("ours_text"), o.at("text")) << conv.id;
  EXPECT_EQ(sample.ids, o.at("hf_ids").get<std::vector<int32_t>>()) << conv.id << "\n" << o.at("text");
}

// `two_ranks`: train on two ranks (full_shard) and resume there; otherwise on one, killed and
// resumed when `kill_and_resume`.
void run_family(const Family& f, bool kill_and_resume, bool two_ranks = false) {
  const auto root = testing::scratch_dir();
  const auto tok = testing::source_dir() / ".deps" / "tokenizers" / f.tokenizer;
  ASSERT_TRUE(fs::exists(tok / "tokenizer.json")) << tok << " missing: run ctest -R oracle.bpe_tokenizers first";
  std::ofstream(root / "init.yaml") << "model:\n"
                                    << f.model_keys << kTinyShape << "seed: 5\ntokenizer: " << tok.string() << "\n";
  ok("init --config " + (root / "init.yaml").string() + " --out " + (root / "init").string());
  EXPECT_EQ(read_text_file(root / "init" / "tokenizer.json"), read_text_file(tok / "tokenizer.json"));
  set_eos_list(root / "init", f.eos);
  write_configs(root, tok, root / "init", f.chat_template);
  ok("prepare --no-progress --config " + (root / "prepare.yaml").string());
  expect_trained_calls_parse(root / "agent_prepare.yaml",
                             ok("prepare --no-progress --config " + (root / "agent_prepare.yaml").string()));
  sft_on_native_calls_trains_and_resumes(root, tok, root / "init");
  if (::testing::Test::HasFatalFailure()) return;

  const auto run = root / "full";
  ASSERT_EQ(testing::run_command((two_ranks ? testing::torchrun(2) : "") + train_cmd(root, run)), 0)
      << read_text_file(run.string() + ".log");
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
    expect_equal_checkpoints(run, killed, 1);
  }
  if (two_ranks) {
    resume_on_two_ranks_matches(root, run);
    if (::testing::Test::HasFatalFailure()) return;
  }

  // The run's tokenizer (data.tokenizer, the folder) travels into the export as it is.
  const auto hf = root / "hf";
  const auto exported = ok("export --dtype float32 --verify transformers --checkpoint " +
                           (run / "checkpoints").string() + " --out " + hf.string());
  EXPECT_NE(exported.find("its tokenizer gives our"), std::string::npos) << exported;
  EXPECT_FALSE(fs::exists(hf / "tokenizer.model"));
  // A tied folder holds the table once, under the embedding's name, as Hugging Face writes it.
  EXPECT_EQ(read_json_file(hf / "config.json").at("tie_word_embeddings").get<bool>(), f.tied);
  EXPECT_EQ(SafetensorsFile::open(hf / "model.safetensors").find("lm_head.weight") != nullptr, !f.tied);
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

TEST(FamilyEndToEnd, Qwen25TiedInitPrepareTrainExportAndGenerateAsTransformers) { run_family(kQwen25, false); }

TEST(FamilyEndToEnd, Llama32TiedTrainsOnTwoRanksResumesExportsAndGeneratesAsTransformers) {
  run_family(kLlama32, /*kill_and_resume=*/false, /*two_ranks=*/true);
}

}  // namespace
}  // namespace agenttune
