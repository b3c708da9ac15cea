// Held-out records (data/heldout.h) and the held-out loss per source, task and capability
// (eval/heldout_loss.h) against the model's own loss path.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "agenttune/data/heldout.h"
#include "agenttune/eval/heldout_loss.h"
#include "agenttune/model/loss.h"
#include "agenttune/readers/dataset.h"
#include "agenttune/util/files.h"
#include "error_of.h"
#include "test_paths.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace agenttune::eval {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_TOKENIZER()                                             \
  if (testing::shared_fixture("llama2-tokenizer.model").empty())        \
  GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found"

std::vector<HeldOutRecord> sample_records(const std::string& file, DatasetFormat format, const std::string& source) {
  ReadReport report;
  auto convs = read_dataset(DatasetSpec{source, {testing::source_dir() / "data/samples" / file}, format, {}}, report);
  std::vector<HeldOutRecord> out;
  for (auto& c : convs) out.push_back({c, task_of(c, format), is_negative(c)});
  return out;
}

TEST(HeldOutFile, RoundTripKeepsEverything) {
  HeldOutRecord r;
  r.conv.id = "kg_3";
  r.conv.source = "agentinstruct";
  r.conv.file = "/data/agent.jsonl";
  r.conv.record = 41;
  r.conv.turns = {{Role::System, "sys", std::nullopt, ""},
                  {Role::User, "q \"quoted\"\n", false, ""},
                  {Role::Assistant, "Thought: x", true, "reasoning"},
                  {Role::Tool, "{\"r\": 1}", std::nullopt, ""},
                  {Role::Assistant, "done", std::nullopt, "understanding"}};
  r.task = AgentTask::Kg;
  HeldOutRecord n = r;
  n.conv.id = "toolbench_negative_1";
  n.task = AgentTask::AgentFlan;
  n.negative = true;
  const auto dir = testing::scratch_dir();
  write_heldout(dir / kHeldOutFile, {r, n});
  const auto back = read_heldout(dir);  // a prepared folder finds its heldout.jsonl
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto& want = i == 0 ? r : n;
    EXPECT_EQ(back[i].conv.id, want.conv.id);
    EXPECT_EQ(back[i].conv.source, want.conv.source);
    EXPECT_EQ(back[i].conv.file, want.conv.file);
    EXPECT_EQ(back[i].conv.record, want.conv.record);
    EXPECT_EQ(back[i].task, want.task);
    EXPECT_EQ(back[i].negative, want.negative);
    ASSERT_EQ(back[i].conv.turns.size(), want.conv.turns.size());
    for (size_t t = 0; t < want.conv.turns.size(); ++t) {
      EXPECT_EQ(back[i].conv.turns[t].role, want.conv.turns[t].role);
      EXPECT_EQ(back[i].conv.turns[t].content, want.conv.turns[t].content);
      EXPECT_EQ(back[i].conv.turns[t].loss, want.conv.turns[t].loss);
      EXPECT_EQ(back[i].conv.turns[t].capability, want.conv.turns[t].capability);
    }
  }
}

TEST(HeldOutFile, ErrorsNameFileLineAndField) {
  const auto dir = testing::scratch_dir();
  const std::string good =
      R"({"id":"os_1","source":"s","task":"os","negative":false,"file":"f","record":0,"turns":[{"role":"user","content":"x","loss":null}]})";
  auto err = [&](const std::string& second) {
    write_file_atomic(dir / "h.jsonl", good + "\n" + second + "\n");
    return testing::error_of([&] { read_heldout(dir / "h.jsonl"); });
  };
  EXPECT_EQ(err(good), "");
  EXPECT_NE(err(R"({"id":"os_1","source":"s","task":"oss","negative":false,"file":"f","record":0,"turns":[]})")
                .find("h.jsonl line 2: unknown agent task 'oss', did you mean 'os'?"),
            std::string::npos);
  EXPECT_NE(err(R"({"id":"os_1","source":"s","task":"os","negative":"no","file":"f","record":0,"turns":[]})")
                .find("line 2: field 'negative' must be a boolean"),
            std::string::npos);
  EXPECT_NE(err(R"({"id":"os_1","source":"s","task":"os","negative":false,"file":"f","record":0,"turns":[{"role":"bot","content":"x"}]})")
                .find("role 'bot'"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { read_heldout(dir / "absent"); }).find("no held-out records here"),
            std::string::npos);
}

TEST(AgentTasks, FromIdsFormatsAndNames) {
  EXPECT_EQ(agentinstruct_task("mind2web_12"), AgentTask::Mind2web);
  EXPECT_EQ(agentinstruct_task("alfworld_0"), AgentTask::Alfworld);
  EXPECT_EQ(agentinstruct_task("osx_1"), std::nullopt);
  for (const auto& [t, name] : EnumNames<AgentTask>::values) EXPECT_EQ(task_from_name(task_name(t)), t);
  Conversation c;
  c.id = "webshop_3";
  EXPECT_EQ(task_of(c, DatasetFormat::AgentInstruct), AgentTask::Webshop);
  EXPECT_EQ(task_of(c, DatasetFormat::ShareGPT), AgentTask::Chat);
  EXPECT_EQ(task_of(c, DatasetFormat::ToolBench), AgentTask::ToolBench);
  c.file = "/x/toolbench_negative.jsonl";
  EXPECT_TRUE(is_negative(c));
}

class HeldOutLossTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto tok_path = testing::shared_fixture("llama2-tokenizer.model");
    if (tok_path.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(tok_path));
    tmpl_ = make_template("agentlm");
    auto cfg = testing::tiny_llama(/*vocab=*/32000, /*hidden=*/32, /*ffn=*/64, /*layers=*/2, /*heads=*/4,
                                   /*kv_heads=*/2, /*max_positions=*/2048);
    model_ = LlamaForCausalLM(cfg);
    model_->reset_parameters(5);
    em_ = plain_eval_model(model_);
  }

  // The model's own summed loss over the rendering's trained tokens (the training path).
  std::pair<int64_t, double> direct_loss(const Conversation& c) {
    const auto s = tmpl_->render(c, *tok_);
    const auto n = static_cast<int64_t>(s.ids.size());
    auto tokens = at::empty({1, n}, at::kLong);
    auto targets = at::full({1, n}, kIgnoreIndex, at::kLong);
    int64_t trained = 0;
    for (int64_t t = 0; t < n; ++t) {
      tokens[0][t] = s.ids[t];
      if (t + 1 < n && s.trained[t + 1]) targets[0][t] = s.ids[t + 1], ++trained;
    }
    at::NoGradGuard ng;
    const auto positions = at::arange(n, at::kLong).unsqueeze(0);
    return {trained, model_->loss_sum(tokens, positions, targets).item<double>()};
  }

  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<ChatTemplate> tmpl_;
  LlamaForCausalLM model_{nullptr};
  std::unique_ptr<EvalModel> em_;
};

TEST_F(HeldOutLossTest, PerSourceAndTaskEqualTheModelsLoss) {
  auto records = sample_records("agentinstruct.jsonl", DatasetFormat::AgentInstruct, "agentinstruct");
  for (auto& r : sample_records("toolbench_sft.json", DatasetFormat::ToolBench, "toolbench")) records.push_back(r);
  HeldOutLossOptions o;
  o.batch_size = 3;
  const auto got = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  std::map<std::string, std::pair<int64_t, double>> by_source, by_task;
  int64_t tokens = 0;
  double loss = 0;
  for (const auto& r : records) {
    const auto [n, l] = direct_loss(r.conv);
    by_source[r.conv.source].first += n, by_source[r.conv.source].second += l;
    by_task[task_name(r.task)].first += n, by_task[task_name(r.task)].second += l;
    tokens += n, loss += l;
  }
  EXPECT_EQ(got.total.records, static_cast<int64_t>(records.size()));
  EXPECT_EQ(got.total.tokens, tokens);
  EXPECT_NEAR(got.total.loss_sum, loss, 1e-4 * loss);
  ASSERT_EQ(got.by_source.size(), 2u);
  for (const auto& [src, want] : by_source) {
    EXPECT_EQ(got.by_source.at(src).tokens, want.first) << src;
    EXPECT_NEAR(got.by_source.at(src).loss_sum, want.second, 1e-4 * want.second) << src;
  }
  ASSERT_EQ(got.by_task.size(), by_task.size());
  EXPECT_EQ(got.by_task.count("os"), 1u);
  EXPECT_EQ(got.by_task.count("toolbench"), 1u);
  for (const auto& [task, want] : by_task) EXPECT_NEAR(got.by_task.at(task).loss_sum, want.second, 1e-4 * want.second);
  // Untagged records: all their trained tokens are "untagged".
  ASSERT_EQ(got.by_capability.size(), 1u);
  EXPECT_EQ(got.by_capability.at("untagged").tokens, tokens);
  // The batch size changes nothing.
  o.batch_size = 1;
  EXPECT_NEAR(heldout_loss(*em_, *tmpl_, *tok_, records, o).total.loss_sum, got.total.loss_sum, 1e-5 * loss);
}

TEST_F(HeldOutLossTest, CapabilitiesSplitTheTrainedTokensByTurnTag) {
  HeldOutRecord r;
  r.conv.id = "t1";
  r.conv.source = "tagged";
  r.conv.turns = {{Role::User, "What is the weather in Oslo?", std::nullopt, ""},
                  {Role::Assistant, "I should look it up.", std::nullopt, "reasoning"},
                  {Role::User, "Which tool will you call?", false, ""},
                  {Role::Assistant, "weather_for_city", std::nullopt, "retrieval"},
                  {Role::User, "With what arguments?", false, ""},
                  {Role::Assistant, "{\"city\": \"Oslo\"}", std::nullopt, "understanding"}};
  const auto got = heldout_loss(*em_, *tmpl_, *tok_, {r}, {});
  ASSERT_EQ(got.by_capability.size(), 3u);
  int64_t tokens = 0;
  double loss = 0;
  for (const auto& [cap, tally] : got.by_capability) {
    // Each capability's tokens are those trained when only its turn is.
    Conversation only = r.conv;
    for (auto& t : only.turns)
      if (t.role == Role::Assistant && t.capability != cap) t.loss = false;
    const auto [n, l] = direct_loss(only);
    EXPECT_EQ(tally.tokens, n) << cap;
    EXPECT_NEAR(tally.loss_sum, l, 1e-4 * l) << cap;
    tokens += tally.tokens, loss += tally.loss_sum;
  }
  EXPECT_EQ(tokens, got.total.tokens);
  EXPECT_NEAR(loss, got.total.loss_sum, 1e-4 * loss);
}

TEST_F(HeldOutLossTest, AlignDecomposesReActRecordsIntoCapabilities) {
  const auto records = sample_records("toolbench_sft.json", DatasetFormat::ToolBench, "toolbench");
  HeldOutLossOptions o;
  const auto plain = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  o.align = AlignConfig{};
  const auto aligned = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  EXPECT_EQ(aligned.total.tokens, plain.total.tokens);  // the records as given
  EXPECT_NEAR(aligned.total.loss_sum, plain.total.loss_sum, 1e-6 * plain.total.loss_sum);
  for (const char* cap : {"reasoning", "retrieval", "understanding"}) {
    ASSERT_EQ(aligned.by_capability.count(cap), 1u) << cap;
    EXPECT_GT(aligned.by_capability.at(cap).tokens, 0) << cap;
    EXPECT_GT(aligned.by_capability.at(cap).mean(), 0) << cap;
  }
}

TEST_F(HeldOutLossTest, LongRenderingsAreCutAndCounted) {
  const auto records = sample_records("agentinstruct.jsonl", DatasetFormat::AgentInstruct, "agentinstruct");
  HeldOutLossOptions o;
  const auto full = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  o.max_seq_len = 64;
  const auto cut = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  EXPECT_GT(cut.tokens_cut, 0);
  EXPECT_EQ(cut.total.tokens + cut.tokens_cut, full.total.tokens);
}

// A model every rank holds whole, whose reductions are the group's: score_targets' share-out and
// gather, without the sharding engine.
class ReplicatedModel : public EvalModel {
 public:
  ReplicatedModel(LlamaForCausalLM m, parallel::ProcessGroup& pg, int rank, int world)
      : plain_(plain_eval_model(std::move(m))), pg_(pg), rank_(rank), world_(world) {}
  const LlamaConfig& config() const override { return plain_->config(); }
  c10::Device device() const override { return plain_->device(); }
  c10::ScalarType dtype() const override { return plain_->dtype(); }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  at::Tensor logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec, KVCache* cache,
                    const at::Tensor& head_rows) override {
    ++calls;
    return plain_->logits(tokens, positions, spec, cache, head_rows);
  }
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                      const at::Tensor& targets, int64_t trained) override {
    return plain_->loss_sum(tokens, positions, spec, targets, trained);
  }
  int64_t max_over_ranks(int64_t v) override {
    return static_cast<int64_t>(pg_.all_reduce(static_cast<double>(v), parallel::Reduce::Max, "max"));
  }
  void sum_over_ranks(at::Tensor& t) override { pg_.all_reduce(t, parallel::Reduce::Sum, "scores"); }
  int calls = 0;

 private:
  std::unique_ptr<EvalModel> plain_;
  parallel::ProcessGroup& pg_;
  int rank_, world_;
};

TEST_F(HeldOutLossTest, TwoRanksShareTheWorkAndAgreeWithOne) {
  auto records = sample_records("agentinstruct.jsonl", DatasetFormat::AgentInstruct, "agentinstruct");
  HeldOutLossOptions o;
  o.batch_size = 2;  // 5 records: 3 batches, so rank 1 also runs one empty round
  const auto one = heldout_loss(*em_, *tmpl_, *tok_, records, o);
  std::vector<HeldOutLoss> got(2);
  std::vector<int> calls(2);
  testing::run_ranks(2, [&](parallel::ProcessGroup& pg, const parallel::WorldInfo& w) {
    LlamaForCausalLM m(model_->config());
    m->reset_parameters(5);
    ReplicatedModel rm(m, pg, w.rank, w.world_size);
    got[w.rank] = heldout_loss(rm, *tmpl_, *tok_, records, o);
    calls[w.rank] = rm.calls;
  });
  EXPECT_EQ(calls[0], 2);
  EXPECT_EQ(calls[1], 2);  // one real batch, one keep-in-step call
  for (const auto& g : got) {
    EXPECT_EQ(g.total.tokens, one.total.tokens);
    EXPECT_NEAR(g.total.loss_sum, one.total.loss_sum, 1e-5 * one.total.loss_sum);
    for (const auto& [task, t] : one.by_task) EXPECT_NEAR(g.by_task.at(task).loss_sum, t.loss_sum, 1e-5 * t.loss_sum);
  }
}

}  // namespace
}  // namespace agenttune::eval
