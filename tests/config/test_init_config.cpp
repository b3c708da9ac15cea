// InitConfig and the LlamaConfig section: the tiny config, overrides, error messages, round trip.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agenttune/config/load.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/model/init_config.h"
#include "config_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::write_yaml;
namespace fs = std::filesystem;

fs::path tiny() { return testing::source_dir() / "configs" / "tiny" / "model.yaml"; }

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

void expect_same(const LlamaConfig& a, const LlamaConfig& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rope_theta, b.rope_theta);  // exact: the dump must round-trip doubles bit for bit
  EXPECT_EQ(a.rope_scaling_factor, b.rope_scaling_factor);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.rope_scaling_type, b.rope_scaling_type);
  EXPECT_EQ(a.rope_low_freq_factor, b.rope_low_freq_factor);
  EXPECT_EQ(a.rope_high_freq_factor, b.rope_high_freq_factor);
  EXPECT_EQ(a.rope_original_max_position_embeddings, b.rope_original_max_position_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids(), b.eos_token_ids());
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.dtype, b.dtype);
}

TEST(InitConfig, LoadsTinyConfig) {
  auto cfg = load_config<InitConfig>(tiny());
  EXPECT_EQ(cfg.model.vocab_size, 32000);
  EXPECT_EQ(cfg.model.hidden_size, 64);
  EXPECT_EQ(cfg.model.intermediate_size, 176);
  EXPECT_EQ(cfg.model.num_hidden_layers, 2);
  EXPECT_EQ(cfg.model.num_attention_heads, 4);
  EXPECT_EQ(cfg.model.num_key_value_heads, 2);
  EXPECT_EQ(cfg.model.resolved_head_dim(), 16);
  EXPECT_EQ(cfg.model.max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(cfg.model.rms_norm_eps, 1e-5);
  EXPECT_EQ(cfg.model.pad_token_id, std::nullopt);
  EXPECT_EQ(cfg.model.dtype, c10::ScalarType::Float);
  EXPECT_EQ(cfg.seed, 0u);
  // Relative to the config file's folder, not to the working directory.
  auto expected = fs::absolute(testing::source_dir().parent_path() / "shared" / "fixtures" /
                               "llama2-tokenizer.model").lexically_normal();
  EXPECT_EQ(cfg.tokenizer, expected);
}

TEST(InitConfig, MissingKeysKeepDefaults) {
  auto cfg = load_config<InitConfig>(write_yaml("c.yaml", "seed: 5\n"));
  EXPECT_EQ(cfg.seed, 5u);
  expect_same(cfg.model, LlamaConfig{});
  EXPECT_TRUE(cfg.tokenizer.empty());
  auto empty = load_config<InitConfig>(write_yaml("e.yaml", "# nothing but a comment\n"));
  EXPECT_EQ(empty.model.hidden_size, 4096);
}

TEST(InitConfig, OverridesNested) {
  auto cfg = load_config<InitConfig>(
      tiny(), {"model.hidden_size=128", "model.num_attention_heads=8", "model.pad_token_id=0",
               "model.dtype=bf16", "seed=7", "model.rope_theta=500000", "tokenizer="});
  EXPECT_EQ(cfg.model.hidden_size, 128);
  EXPECT_EQ(cfg.model.num_attention_heads, 8);
  EXPECT_EQ(cfg.model.pad_token_id, 0);
  EXPECT_EQ(cfg.model.dtype, c10::ScalarType::BFloat16);
  EXPECT_DOUBLE_EQ(cfg.model.rope_theta, 500000.0);
  EXPECT_EQ(cfg.seed, 7u);
  EXPECT_TRUE(cfg.tokenizer.empty());
  EXPECT_EQ(cfg.model.num_hidden_layers, 2);  // untouched keys keep the file's values
  // A whole section as a flow mapping, and the last of two overrides winning.
  auto flow = load_config<InitConfig>(tiny(), {"model={hidden_size: 32, num_attention_heads: 2, "
                                               "num_key_value_heads: 1}", "seed=1", "seed=2"});
  EXPECT_EQ(flow.model.hidden_size, 32);
  EXPECT_EQ(flow.model.num_key_value_heads, 1);
  EXPECT_EQ(flow.model.vocab_size, 32000);  // replaced section: unspecified keys are defaults
  EXPECT_EQ(flow.model.num_hidden_layers, 32);
  EXPECT_EQ(flow.seed, 2u);
}

TEST(InitConfig, OverrideErrors) {
  auto msg = error_of([] { load_config<InitConfig>(tiny(), {"model.hidden_size=abc"}); });
  EXPECT_TRUE(contains(msg, "model.yaml: --set model.hidden_size=abc: model.hidden_size: "
                            "expected an integer, got 'abc'"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"model.hiden_size=3"}); });
  EXPECT_TRUE(contains(msg, "--set model.hiden_size=3: unknown key 'model.hiden_size' "
                            "(did you mean 'hidden_size'?)"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"sed=3"}); });
  EXPECT_TRUE(contains(msg, "unknown key 'sed' (did you mean 'seed'?)"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"seed.value=1"}); });
  EXPECT_TRUE(contains(msg, "'seed' is '0', not a mapping, so it has no key 'value'"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"model.hidden_size"}); });
  EXPECT_TRUE(contains(msg, "expected KEY=VALUE"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"model..x=1"}); });
  EXPECT_TRUE(contains(msg, "empty component"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"seed=[1, 2"}); });
  EXPECT_TRUE(contains(msg, "value is not valid YAML"));
}

TEST(InitConfig, UnknownKeysNameFileLineAndSuggestion) {
  auto top = write_yaml("top.yaml", "model:\n  hidden_size: 64\nsed: 3\n");
  auto msg = error_of([&] { load_config<InitConfig>(top); });
  EXPECT_TRUE(contains(msg, top.string() + ":3: unknown key 'sed' (did you mean 'seed'?)"));

  auto nested = write_yaml("nested.yaml", "seed: 1\nmodel:\n  hiden_size: 64\n");
  msg = error_of([&] { load_config<InitConfig>(nested); });
  EXPECT_TRUE(contains(msg, nested.string() +
                                ":3: unknown key 'model.hiden_size' (did you mean 'hidden_size'?)"));

  // Nothing close: list what is valid instead of guessing.
  auto far = write_yaml("far.yaml", "model:\n  zzzzzzzzzzzz: 1\n");
  msg = error_of([&] { load_config<InitConfig>(far); });
  EXPECT_TRUE(contains(msg, ":2: unknown key 'model.zzzzzzzzzzzz' (valid keys in 'model': "
                            "model_type, vocab_size, hidden_size,"));

  auto dup = write_yaml("dup.yaml", "seed: 1\nseed: 2\n");
  msg = error_of([&] { load_config<InitConfig>(dup); });
  EXPECT_TRUE(contains(msg, dup.string() + ":2: duplicate key 'seed'"));
}

TEST(InitConfig, WrongTypesNameLineKeyAndValue) {
  struct Case {
    std::string yaml, expected;
  };
  const Case cases[] = {
      {"model:\n  vocab_size: 10\n  hidden_size: abc\n",
       ":3: model.hidden_size: expected an integer, got 'abc'"},
      {"model:\n  hidden_size: 1.5\n", ":2: model.hidden_size: expected an integer, got '1.5'"},
      {"model:\n  tie_word_embeddings: maybe\n",
       ":2: model.tie_word_embeddings: expected a boolean (true or false), got 'maybe'"},
      {"model:\n  rope_theta: [1, 2]\n", ":2: model.rope_theta: expected a number, got a list"},
      {"model:\n  dtype: float64\n",
       ":2: model.dtype: expected a dtype (float32, bfloat16 or float16), got 'float64'"},
      {"\n\nmodel: 5\n", ":3: model: expected a mapping, got '5'"},
      {"seed: -1\n", ":1: seed: expected a non-negative integer, got '-1'"},
      {"model:\n  hidden_size: null\n", ":2: model.hidden_size: expected an integer, got null"},
      {"- a\n- b\n", ":1: (top level): expected a mapping, got a list"},
  };
  for (const auto& c : cases) {
    auto path = write_yaml("bad.yaml", c.yaml);
    auto msg = error_of([&] { load_config<InitConfig>(path); });
    EXPECT_TRUE(contains(msg, path.string() + c.expected)) << c.yaml;
  }
  auto syntax = write_yaml("syntax.yaml", "model:\n  hidden_size: [1, 2\n");
  auto msg = error_of([&] { load_config<InitConfig>(syntax); });
  EXPECT_TRUE(contains(msg, syntax.string() + ":")) << msg;
  EXPECT_TRUE(contains(msg, "invalid YAML"));
}

TEST(InitConfig, ValidateRunsAfterBinding) {
  auto msg = error_of([] { load_config<InitConfig>(tiny(), {"model.num_attention_heads=3"}); });
  EXPECT_TRUE(contains(msg, tiny().string() + ": hidden_size 64 is not divisible by "
                                              "num_attention_heads 3"));
  msg = error_of([] { load_config<InitConfig>(tiny(), {"model.num_key_value_heads=3"}); });
  EXPECT_TRUE(contains(msg, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"));
}

TEST(InitConfig, ResolvedDumpLoadsBackEqual) {
  auto cfg = load_config<InitConfig>(
      tiny(), {"model.pad_token_id=0", "model.dtype=bfloat16", "model.head_dim=32",
               "model.tie_word_embeddings=true", "model.rope_scaling_factor=2.5",
               "model.rms_norm_eps=1e-6", "model.initializer_range=0.1", "seed=123"});
  auto out = testing::scratch_dir() / "resolved.yaml";
  write_resolved_config(out, cfg);
  auto back = load_config<InitConfig>(out);
  expect_same(back.model, cfg.model);
  EXPECT_EQ(back.seed, 123u);
  EXPECT_EQ(back.tokenizer, cfg.tokenizer);  // absolute after resolution, so the dump's folder is moot

  // The families' keys (a Llama-3 and a Qwen3 block) round-trip as well, and a misspelt family is
  // named with what it may be.
  for (const std::vector<std::string>& family :
       {std::vector<std::string>{"model.rope_scaling_type=llama3", "model.rope_scaling_factor=8",
                                 "model.rope_low_freq_factor=1.5", "model.rope_high_freq_factor=6",
                                 "model.rope_original_max_position_embeddings=256"},
        std::vector<std::string>{"model.model_type=qwen3", "model.attention_bias=true", "model.head_dim=32"}}) {
    auto fam = load_config<InitConfig>(tiny(), family);
    write_resolved_config(out, fam);
    expect_same(load_config<InitConfig>(out).model, fam.model);
  }
  EXPECT_TRUE(contains(error_of([] { load_config<InitConfig>(tiny(), {"model.model_type=qwen2.5"}); }),
                       "one of llama, qwen2, qwen3"));

  // Defaults round-trip too, null pad included, and the text spells floats and nulls plainly.
  InitConfig defaults;
  auto text = dump_config(defaults);
  EXPECT_TRUE(contains(text, "rope_theta: 10000.0"));
  EXPECT_TRUE(contains(text, "rms_norm_eps: 1.0e-05"));
  EXPECT_TRUE(contains(text, "pad_token_id: null"));
  EXPECT_TRUE(contains(text, "dtype: float32"));
  EXPECT_TRUE(contains(text, "tokenizer: \"\""));
  auto again = load_config_text<InitConfig>(text, {"dump", ".", {}});
  expect_same(again.model, defaults.model);
  EXPECT_EQ(dump_config(again), text);
}

// eos_token_id is one id or a list, as config.json writes it (Llama-3.1-Instruct's three ids): the
// list keeps its order through the resolved dump and --set, one id stays one id, and what is neither
// names the file, line and key.
TEST(InitConfig, EosTokenIdIsOneIdOrAList) {
  const std::vector<int64_t> llama31 = {128001, 128008, 128009};
  auto list = load_config<InitConfig>(write_yaml("list.yaml", "model:\n  eos_token_id: [128001, 128008, 128009]\n"));
  EXPECT_EQ(list.model.eos_token_id, 128001);
  EXPECT_EQ(list.model.eos_token_ids(), llama31);
  EXPECT_TRUE(contains(dump_config(list), "eos_token_id: [128001, 128008, 128009]\n"));
  expect_same(load_config_text<InitConfig>(dump_config(list), {"dump", ".", {}}).model, list.model);
  auto block = load_config<InitConfig>(write_yaml("block.yaml", "model:\n  eos_token_id:\n    - 5\n    - 9\n"));
  EXPECT_EQ(block.model.eos_token_ids(), (std::vector<int64_t>{5, 9}));
  auto set = load_config<InitConfig>(tiny(), {"model.eos_token_id=[2, 7]"});
  EXPECT_EQ(set.model.eos_token_ids(), (std::vector<int64_t>{2, 7}));
  auto one = load_config<InitConfig>(tiny(), {"model.eos_token_id=7"});
  EXPECT_EQ(one.model.eos_token_ids(), std::vector<int64_t>{7});
  EXPECT_TRUE(contains(dump_config(one), "eos_token_id: 7\n"));
  // A list given again by one id replaces it, not extends it.
  EXPECT_EQ(load_config<InitConfig>(write_yaml("l.yaml", "model:\n  eos_token_id: [3, 4]\n"), {"model.eos_token_id=9"})
                .model.eos_token_ids(),
            std::vector<int64_t>{9});

  auto empty = write_yaml("empty.yaml", "model:\n  eos_token_id: []\n");
  EXPECT_TRUE(contains(error_of([&] { load_config<InitConfig>(empty); }),
                       empty.string() +
                           ":2: model.eos_token_id: expected an integer or a non-empty list of them, got a list"));
  auto word = write_yaml("word.yaml", "model:\n  eos_token_id: [2, x]\n");
  EXPECT_TRUE(contains(error_of([&] { load_config<InitConfig>(word); }),
                       word.string() + ":2: model.eos_token_id[1]: expected an integer, got 'x'"));
  auto map = write_yaml("map.yaml", "model:\n  eos_token_id: {id: 2}\n");
  EXPECT_TRUE(contains(error_of([&] { load_config<InitConfig>(map); }),
                       ":2: model.eos_token_id: expected an integer or a non-empty list of them, got a mapping"));
  // The list has the one key; the former second key is unknown.
  EXPECT_TRUE(contains(error_of([] { load_config<InitConfig>(tiny(), {"model.extra_eos_token_ids=[3]"}); }),
                       "unknown key 'model.extra_eos_token_ids'"));
}

// What `init` does with a YAML list (load the config, save the model), read by transformers: config.json
// and generation_config.json hold the list, transformers' own save of them reads back as the same ids.
TEST(InitConfig, EosTokenIdListReachesTransformersAndBack) {
  const auto python = testing::venv_python();
  if (!std::filesystem::exists(python)) GTEST_SKIP() << python.string() << " not found (scripts/setup.sh makes it)";
  auto cfg = load_config<InitConfig>(tiny(), {"model.eos_token_id=[2, 301, 7]", "tokenizer=",
                                              "model.vocab_size=320", "model.num_hidden_layers=1"});
  const auto dir = testing::scratch_dir() / "model", back = testing::scratch_dir() / "transformers_save";
  auto model = make_llama(cfg.model, cfg.seed);
  save_pretrained(model, dir);
  const std::vector<int64_t> want = {2, 301, 7};
  EXPECT_EQ(read_hf_config(dir / "config.json").eos_token_ids(), want);
  std::string out;
  const int rc = testing::run_command(python.string() + " " +
                                          (testing::source_dir() / "tests/config/py/hf_eos_round_trip.py").string() +
                                          " " + dir.string() + " " + back.string(),
                                      &out);
  ASSERT_EQ(rc, 0) << out;
  const auto seen = nlohmann::json::parse(out.substr(out.rfind('{')));
  EXPECT_EQ(seen.at("config").get<std::vector<int64_t>>(), want) << out;
  EXPECT_EQ(seen.at("generation").get<std::vector<int64_t>>(), want) << out;
  const auto reread = read_hf_config(back / "config.json");
  EXPECT_EQ(reread.eos_token_ids(), want);
  EXPECT_EQ(generation_eos_token_ids(back, reread), want);
}

}  // namespace
}  // namespace agenttune
