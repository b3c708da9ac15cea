// The SFT prepare config as YAML (every key, path resolution, enum spellings, misspelt keys,
// validation) and the agent-share helper that turns eta into mixture weights.
#include <gtest/gtest.h>

#include <numeric>

#include "agenttune/config/load.h"
#include "agenttune/data/sft_mix.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

constexpr const char* kYaml = R"(
tokenizer: tok/tokenizer.model
template: agentlm
default_system: Be brief.
datasets:
  - name: agentinstruct
    paths: [data/agentinstruct]
    format: agentinstruct
    output: prepared/agentinstruct
    upsample: 2.5
    transform: true
    policies:
      alternation: merge
      bad_record: drop
      unknown_roles: drop
      drop_leading_assistant: false
  - name: sharegpt
    paths: [data/sharegpt.json]
    output: prepared/sharegpt
    max_samples: 1000
transforms:
  align:
    keep_react_fraction: 0.2
  balance:
    weights: {retrieval: 0.5}
format_following_output: prepared/format_following
max_seq_len: 2048
overlength: window
seed: 9
threads: 3
)";

SftPrepareConfig load(const std::string& text, std::vector<std::string> overrides = {}) {
  return load_config_text<SftPrepareConfig>(text, ConfigSource{"/cfg/sft.yaml", "/cfg", {}}, overrides);
}

TEST(SftConfig, YamlKeysBindAndResolvePaths) {
  auto c = load(kYaml);
  EXPECT_EQ(c.tokenizer, fs::path("/cfg/tok/tokenizer.model"));
  EXPECT_EQ(c.chat_template, "agentlm");
  EXPECT_EQ(c.default_system, "Be brief.");
  ASSERT_EQ(c.datasets.size(), 2u);
  const auto& a = c.datasets[0];
  EXPECT_EQ(a.format, DatasetFormat::AgentInstruct);
  EXPECT_EQ(a.paths, std::vector<fs::path>{"/cfg/data/agentinstruct"});
  EXPECT_EQ(a.output, fs::path("/cfg/prepared/agentinstruct"));
  EXPECT_DOUBLE_EQ(a.upsample, 2.5);
  EXPECT_TRUE(a.transform);
  EXPECT_EQ(a.policies.alternation, Alternation::Merge);
  EXPECT_EQ(a.policies.bad_record, OnProblem::Drop);
  EXPECT_EQ(a.policies.roles.unknown, OnProblem::Drop);
  EXPECT_FALSE(a.policies.drop_leading_assistant);
  EXPECT_FALSE(a.policies.roles.aliases.empty());  // the reader's defaults survive
  const auto& s = c.datasets[1];
  EXPECT_EQ(s.format, DatasetFormat::Auto);
  EXPECT_EQ(s.max_samples, 1000);
  EXPECT_DOUBLE_EQ(s.upsample, 1.0);
  EXPECT_FALSE(s.transform);
  EXPECT_DOUBLE_EQ(c.transforms.align.keep_react_fraction, 0.2);
  EXPECT_DOUBLE_EQ(c.transforms.balance.weights.retrieval, 0.5);
  EXPECT_DOUBLE_EQ(c.transforms.balance.weights.understanding, 0.75);
  EXPECT_EQ(c.format_following_output, fs::path("/cfg/prepared/format_following"));
  EXPECT_EQ(c.max_seq_len, 2048);
  EXPECT_EQ(c.overlength, Overlength::Window);
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.threads, 3);
}

TEST(SftConfig, DefaultsAndDumpRoundTrip) {
  auto c = load("tokenizer: t.model\ndatasets: [{name: x, paths: [x.json], output: out}]\n");
  EXPECT_EQ(c.chat_template, "llama-2-chat");
  EXPECT_FALSE(c.default_system.has_value());
  EXPECT_EQ(c.max_seq_len, 4096);
  EXPECT_EQ(c.overlength, Overlength::Truncate);
  auto full = load(kYaml, {"datasets.1.upsample=0.25"});
  EXPECT_DOUBLE_EQ(full.datasets[1].upsample, 0.25);
  auto again = load(dump_config(full));
  EXPECT_EQ(dump_config(again), dump_config(full));
}

TEST(SftConfig, MisspeltKeysAndBadValuesAreNamed) {
  auto message = [](const std::string& text) {
    try {
      load(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string base = "tokenizer: t.model\n";
  EXPECT_NE(message(base + "datasets: [{name: x, paths: [x], output: o, upsampel: 2}]").find("upsample"),
            std::string::npos);
  EXPECT_NE(message(base + "overlength: cut\ndatasets: [{name: x, paths: [x], output: o}]").find("window"),
            std::string::npos);
  EXPECT_NE(message(base + "datasets: [{name: x, paths: [x], output: o, upsample: -1}]").find("upsample"),
            std::string::npos);
  EXPECT_NE(message(base + "datasets: [{name: x, paths: [x], output: o}, {name: x, paths: [y], output: p}]")
                .find("used twice"),
            std::string::npos);
  EXPECT_NE(message(base + "template: llama2\ndatasets: [{name: x, paths: [x], output: o}]").find("llama-2-chat"),
            std::string::npos);
  EXPECT_NE(message(base + "datasets: []").find("at least one dataset"), std::string::npos);
}

TEST(SftConfig, ShippedAgentTuningConfigLoadsAndRuns) {
  const auto file = testing::source_dir() / "configs" / "sft" / "agenttuning_prepare.yaml";
  auto out = testing::scratch_dir();
  auto c = load_config<SftPrepareConfig>(file, {"datasets.0.output=" + (out / "ai").string(),
                                                "datasets.1.output=" + (out / "sg").string(), "progress=false"});
  ASSERT_EQ(c.datasets.size(), 2u);
  for (const auto& d : c.datasets) EXPECT_TRUE(fs::exists(d.paths.at(0))) << d.paths.at(0);
  if (!fs::exists(c.tokenizer)) GTEST_SKIP() << c.tokenizer << " not found";
  auto r = prepare_sft(c);
  ASSERT_EQ(r.datasets.size(), 2u);
  EXPECT_EQ(r.datasets[0].kept, 5);
  auto w = weights_for_agent_share(0.2, {share_source("ai", out / "ai", true), share_source("sg", out / "sg", false)});
  EXPECT_NEAR(w[0] + w[1], 1.0, 1e-12);
  EXPECT_GT(w[0], 0.2);  // agent trajectories train more tokens per sample than these chats
}

TEST(AgentShare, EtaInSamplesAccountsForSampleLength) {
  // Agent samples are 4x longer than general ones: drawing 20 % of the samples from them needs
  // 0.2*4 / (0.2*4 + 0.8*1) = 50 % of the trained tokens.
  std::vector<ShareSource> s = {{"agentinstruct", true, 100, 40000}, {"sharegpt", false, 1000, 100000}};
  auto w = weights_for_agent_share(0.2, s);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NEAR(w[0], 0.5, 1e-12);
  EXPECT_NEAR(w[1], 0.5, 1e-12);
  auto t = weights_for_agent_share(0.2, s, ShareUnit::TrainedTokens);
  EXPECT_NEAR(t[0], 0.2, 1e-12);
}

TEST(AgentShare, SourcesOfAGroupAreDrawnAsIfConcatenated) {
  // Agent-FLAN's 1:1 with the agent data split over two folders of different lengths.
  std::vector<ShareSource> s = {{"react", true, 10, 3000}, {"tflan", true, 30, 3000}, {"sharegpt", false, 40, 8000}};
  auto w = weights_for_agent_share(0.5, s);
  EXPECT_NEAR(std::accumulate(w.begin(), w.end(), 0.0), 1.0, 1e-12);
  // Samples drawn per unit weight = weight / (trained tokens per sample): react : tflan : sharegpt
  // must be 10 : 30 : 40 (agent half, general half).
  const double react = w[0] / 300, tflan = w[1] / 100, sharegpt = w[2] / 200;
  EXPECT_NEAR(react / tflan, 10.0 / 30.0, 1e-12);
  EXPECT_NEAR(sharegpt / react, 40.0 / 10.0, 1e-12);
}

TEST(AgentShare, RejectsBadEtaAndMissingGroups) {
  std::vector<ShareSource> general_only = {{"sharegpt", false, 10, 100}};
  EXPECT_THROW(weights_for_agent_share(1.5, general_only), Error);
  EXPECT_THROW(weights_for_agent_share(0.2, general_only), Error);
  auto w = weights_for_agent_share(0.0, general_only);
  EXPECT_DOUBLE_EQ(w[0], 1.0);
}

}  // namespace
}  // namespace agenttune

#include "agenttune/train/train_config.h"

namespace agenttune {
namespace {

// The shipped paper configs load (every key valid) and carry the published numbers
// (../shared/spec/recipes.md §3.2-§3.4).
TEST(PaperConfigs, CarryThePublishedNumbers) {
  const auto dir = testing::source_dir() / "configs";
  for (const char* size : {"7b", "13b", "70b"}) {
    auto c = load_config<TrainConfig>(dir / "agenttuning" / (std::string("agentlm_") + size + ".yaml"));
    EXPECT_EQ(c.train.lr, std::string(size) == "70b" ? 1e-5 : 5e-5) << size;
    EXPECT_EQ(c.train.global_batch_sequences, 64);
    EXPECT_EQ(c.data.seq_len, 4096);
    EXPECT_EQ(c.data.agent_share, 0.2);
    EXPECT_EQ(c.data.weight_unit, ShareUnit::Samples);
    EXPECT_TRUE(c.data.sources.at(0).agent);
    EXPECT_EQ(c.train.beta2, 0.95);
    EXPECT_EQ(c.train.weight_decay, 0.1);
  }
  auto flan = load_config<TrainConfig>(dir / "agentflan" / "agentflan_7b.yaml");
  EXPECT_EQ(flan.train.lr, 2e-5);
  EXPECT_DOUBLE_EQ(flan.train.warmup_start_ratio * flan.train.lr, 4e-6);
  EXPECT_EQ(flan.train.epochs, 1);
  EXPECT_EQ(flan.train.global_batch_sequences, 32);
  EXPECT_EQ(flan.data.agent_share, 0.5);
  auto lemur = load_config<TrainConfig>(dir / "lemur" / "chat_70b.yaml");
  EXPECT_EQ(lemur.train.epochs, 2);
  EXPECT_EQ(lemur.train.lr, 2e-5);
  EXPECT_EQ(lemur.train.global_batch_sequences, 128);

  auto at_data = load_config<SftPrepareConfig>(dir / "agenttuning" / "data.yaml");
  EXPECT_EQ(at_data.chat_template, "agentlm");
  EXPECT_EQ(at_data.datasets.at(1).max_samples, 4 * 3670);  // GPT-3.5 : GPT-4 = 0.8 : 0.2
  auto flan_data = load_config<SftPrepareConfig>(dir / "agentflan" / "data.yaml");
  EXPECT_EQ(flan_data.chat_template, "agent-flan");
  EXPECT_EQ(flan_data.transforms.align.keep_react_fraction, 0.1);
  EXPECT_EQ(flan_data.transforms.balance.weights.retrieval, 0.25);
  EXPECT_EQ(flan_data.transforms.balance.weights.understanding, 0.75);
  EXPECT_EQ(flan_data.transforms.format_following.samples, 2000);
  auto lemur_data = load_config<SftPrepareConfig>(dir / "lemur" / "chat_data.yaml");
  EXPECT_EQ(lemur_data.chat_template, "chatml");
}

// AgentTuning's hybrid recipe on Llama-3.1-8B and Qwen2.5-7B: every key valid, the family's template
// and tokenizer folder, the recipe's eta and schedule kept.
TEST(PaperConfigs, FamilyRecipesLoad) {
  const auto dir = testing::source_dir() / "configs" / "agenttuning";
  for (const auto& [stem, tmpl] : {std::pair{"llama31_8b", "llama-3"}, std::pair{"qwen25_7b", "qwen2.5"}}) {
    SCOPED_TRACE(stem);
    auto c = load_config<TrainConfig>(dir / (std::string("agentlm_") + stem + ".yaml"));
    auto d = load_config<SftPrepareConfig>(dir / (std::string("data_") + stem + ".yaml"));
    EXPECT_EQ(d.chat_template, tmpl);
    EXPECT_EQ(d.tokenizer, c.data.tokenizer);
    EXPECT_EQ(c.data.tokenizer, c.model.init_from);
    EXPECT_EQ(d.datasets.size(), c.data.sources.size());
    for (size_t i = 0; i < d.datasets.size(); ++i) EXPECT_EQ(d.datasets[i].output, c.data.sources[i].path);
    EXPECT_EQ(c.data.agent_share, 0.2);
    EXPECT_EQ(c.data.weight_unit, ShareUnit::Samples);
    EXPECT_EQ(c.train.lr, 5e-5);
    EXPECT_EQ(c.train.global_batch_sequences, 64);
    EXPECT_EQ(c.data.seq_len, 4096);
  }
}

}  // namespace
}  // namespace agenttune
