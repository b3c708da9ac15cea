// User errors that used to crash (exit 3) or exit with the parser's own codes (issue 14): every one
// is now exit 2 with one message naming the file, key or position.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/util/files.h"
#include "cli_test_util.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::agenttune;
using testing::expect_clean_error;

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

TEST(UserErrors, CommandLineMistakesExit2AndHelpExits0) {
  auto dir = testing::scratch_dir();
  // CLI11 exits 105 for a failed validator and 109 for an unknown flag by itself.
  auto r = agenttune("prepare --config " + (dir / "missing.yaml").string());
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("missing.yaml"), std::string::npos) << r.out;
  r = agenttune("info --model " + (dir / "no_such_model").string());
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("no_such_model"), std::string::npos) << r.out;
  EXPECT_EQ(agenttune("train --no-such-flag").rc, 2);
  EXPECT_EQ(agenttune("").rc, 2);  // no subcommand
  EXPECT_EQ(agenttune("--help").rc, 0);
  EXPECT_EQ(agenttune("train --help").rc, 0);
  EXPECT_EQ(agenttune("--version").rc, 0);
}

TEST(UserErrors, AConfigWhoseTopLevelIsAScalarIsOneErrorForEveryCommand) {
  auto dir = testing::scratch_dir();
  const auto cfg = dir / "hello.yaml";
  write(cfg, "hello\n");
  for (const std::string cmd : {"prepare", "inspect", "train", "plan"})
    expect_clean_error(agenttune(cmd + " --config " + cfg.string() + (cmd == "plan" ? " --gpus 8" : "")),
                       {cfg.string() + ":1: (top level): expected a mapping, got 'hello'"});
  expect_clean_error(agenttune("init --config " + cfg.string() + " --out " + (dir / "m").string()),
                     {cfg.string() + ":1: (top level): expected a mapping, got 'hello'"});
}

TEST(UserErrors, TextFieldThatIsNotUtf8IsNamedAtConfigParse) {
  auto dir = testing::scratch_dir();
  write(dir / "c.jsonl", "{\"text\": \"hello\"}\n");
  write(dir / "p.yaml", "tokenizer: t.model\ncorpora:\n  - name: c\n    inputs: [c.jsonl]\n    text_field: te\xff"
                        "xt\n    output: out\n");
  expect_clean_error(agenttune("prepare --config " + (dir / "p.yaml").string()),
                     {(dir / "p.yaml").string() + ":5: corpora[0].text_field: expected a string (UTF-8)"});
}

TEST(UserErrors, AnOutputFolderThatIsAFileNamesIt) {
  auto tok = testing::shared_fixture("llama2-tokenizer.model");
  if (tok.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto dir = testing::scratch_dir();
  write(dir / "c.jsonl", "{\"text\": \"hello\"}\n");
  write(dir / "taken", "a file");
  write(dir / "p.yaml", "tokenizer: " + tok.string() + "\ncorpora:\n  - {name: c, inputs: [c.jsonl], output: taken}\n");
  expect_clean_error(agenttune("prepare --no-progress --config " + (dir / "p.yaml").string()),
                     {(dir / "taken").string(), "cannot create the folder"});
}

// A tiny train config over one synthetic source (document d = token base+d repeated).
fs::path train_config(const fs::path& dir, const std::string& model_lines, int64_t seq_len) {
  testing::make_synthetic_source(dir / "data", 40, 10, 1, 20, 60, 4096);
  write(dir / "t.yaml", "output_dir: run\nmodel:\n" + model_lines + "data:\n  sources: [{name: a, path: data}]\n"
                        "  seq_len: " + std::to_string(seq_len) + "\ntrain:\n  max_steps: 2\n"
                        "  micro_batch_size: 2\n  global_batch_sequences: 2\n  threads: 1\n"
                        "checkpoint: {interval: 10}\nmetrics: {tensorboard: false}\n");
  return dir / "t.yaml";
}

const char* kShape = "  shape: {vocab_size: 4096, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1,\n"
                     "          num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64}\n";

TEST(UserErrors, ATokenIdPastTheVocabInAShardIsAnErrorNamingTheShardNotACrash) {
  auto dir = testing::scratch_dir();
  auto cfg = train_config(dir, kShape, 32);
  auto ok = agenttune("train --no-progress --config " + cfg.string() + " --set train.max_steps=1");
  ASSERT_EQ(ok.rc, 0) << ok.out;
  // Token 3 of the first document becomes 5000: the model has 4096 embeddings.
  const fs::path bin = dir / "data/shard_00000.bin";
  std::string bytes = read_text_file(bin);
  const uint16_t bad = 5000;
  std::memcpy(bytes.data() + 3 * sizeof bad, &bad, sizeof bad);
  write(bin, bytes);
  // Enough steps that the damaged document comes up.
  expect_clean_error(agenttune("train --no-progress --config " + cfg.string() + " --set output_dir=run2 --set "
                               "train.max_steps=40"),
                     {bin.string() + " token 3 (document 0 of that shard, position 3): token id 5000 is outside the "
                                     "vocabulary of 4096 tokens"});
}

TEST(UserErrors, SeqLenPastTheInitFromModelsPositionsNamesItsConfigJson) {
  auto dir = testing::scratch_dir();
  auto m = testing::make_tiny_model(dir);
  auto j = nlohmann::json::parse(read_text_file(m / "config.json"));
  j["max_position_embeddings"] = 16;
  write(m / "config.json", j.dump(2));
  auto cfg = train_config(dir, "  init_from: m\n", 32);
  expect_clean_error(agenttune("train --no-progress --config " + cfg.string()),
                     {(m / "config.json").string() + ": data.seq_len 32 is longer than the model's 16 positions"});
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoints")) << "refused before any training";
}

// A shape too large for the host (hidden 10^6 x vocab 10^9: 7.5 million GiB) used to exit 3 with
// LibTorch's "DefaultCPUAllocator: not enough memory" (or, for a size overcommit lets through, be
// killed while initialising). It is refused before allocating, naming the model and both figures,
// whether `init` builds it, `generate` loads a folder whose config.json says it, or `train` starts
// from it; and so is a KV cache too large for the host.
TEST(UserErrors, AModelTooLargeForTheHostIsRefusedBeforeAllocatingWithItsSize) {
  auto dir = testing::scratch_dir();
  const std::string huge = "  vocab_size: 1000000000\n  hidden_size: 1000000\n  intermediate_size: 64\n"
                           "  num_hidden_layers: 2\n  num_attention_heads: 4\n  num_key_value_heads: 2\n";
  write(dir / "huge.yaml", "model:\n" + huge);
  const std::string want = "cannot allocate a model of 2.006e+15 parameters (hidden_size 1000000, intermediate_size "
                           "64, vocab_size 1000000000, 2 layers) in float32 on cpu: it needs 7.47e+06 GiB of host "
                           "memory but only ";
  expect_clean_error(agenttune("init --config " + (dir / "huge.yaml").string() + " --out " + (dir / "m").string()),
                     {want});
  auto m = testing::make_tiny_model(dir);
  auto j = nlohmann::json::parse(read_text_file(m / "config.json"));
  j["vocab_size"] = 1000000000, j["hidden_size"] = 1000000, j["intermediate_size"] = 64, j["head_dim"] = 250000;
  write(m / "config.json", j.dump(2));
  expect_clean_error(agenttune("generate --max-new-tokens 1 --prompt-ids 1,2 --model " + m.string()), {want});
  // generate's KV cache is sized by --max-new-tokens: 10^11 positions are 2.38e+04 GiB here.
  fs::create_directories(dir / "small");
  expect_clean_error(agenttune("generate --max-new-tokens 100000000000 --prompt-ids 1,2 --model " +
                               testing::make_tiny_model(dir / "small").string()),
                     {"cannot allocate a KV cache of 100000000002 positions (2 layers, batch 1): it needs 2.38e+04 GiB "
                      "of host memory but only "});
  const auto huge_run = train_config(dir, "  shape: {vocab_size: 1000000000, hidden_size: 1000000, "
                                         "intermediate_size: 64, num_hidden_layers: 2,\n"
                                         "          num_attention_heads: 4, num_key_value_heads: 2}\n", 32);
  // train's memory check (train.memory_check) refuses it first, from the plan; without the check
  // the allocation guard still does.
  expect_clean_error(agenttune("train --no-progress --config " + huge_run.string()),
                     {"the memory plan of this run does not fit 90% of the host's", "| this run ",
                      "no change of recompute, offload, micro-batch or GPU count"});
  expect_clean_error(agenttune("train --no-progress --config " + huge_run.string() + " --set train.memory_check=off"),
                     {want});
}

// When the allocator fails anyway (here: an address-space limit below the 3.26 GiB model, which
// MemAvailable does not see), its c10::Error becomes the same exit 2 naming the model.
TEST(UserErrors, AnAllocationTheAllocatorRefusesIsExit2NamingTheModel) {
  auto dir = testing::scratch_dir();
  write(dir / "big.yaml", "model:\n  vocab_size: 300\n  hidden_size: 12000\n  intermediate_size: 64\n"
                          "  num_hidden_layers: 2\n  num_attention_heads: 4\n  num_key_value_heads: 2\n");
  // LibTorch's libraries map about 3 GB of address space before main(); 5.5 GB leaves room for
  // less than the model.
  const std::string limited = "ulimit -v 5500000 && ";
  ASSERT_EQ(testing::run_command(limited + testing::agenttune_bin() + " --version"), 0) << "cannot start at all";
  std::string out;
  const int rc = testing::run_command(limited + testing::agenttune_bin() + " init --config " +
                                          (dir / "big.yaml").string() + " --out " + (dir / "m").string(), &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("cannot allocate a model of 8.759e+08 parameters (hidden_size 12000, intermediate_size 64, "
                     "vocab_size 300, 2 layers) in float32 on cpu: 3.26 GiB do not fit in host memory"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace agenttune
