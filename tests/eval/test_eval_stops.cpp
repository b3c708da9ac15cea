// Where eval's replies end: at the template's end of turn and at every end-of-sequence id of the
// model (generation_config.json's list, as transformers' generate takes it), on a tiny model whose
// second eos id is a token it writes in the middle of a reply.
#include <gtest/gtest.h>

#include <algorithm>

#include "agenttune/config/load.h"
#include "agenttune/eval/eval_run.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/json_file.h"
#include "agenttune/model/generation.h"
#include "agenttune/util/files.h"
#include "error_of.h"
#include "test_paths.h"
#include "tiny_llama.h"

namespace agenttune::eval {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kNewTokens = 8;

EvalConfig os_turns() {
  return load_config_text<EvalConfig>(
      "records: [{path: data/samples/agentinstruct.jsonl, format: agentinstruct}]\ntemplate: agentlm\n"
      "tasks: [os]\nmax_turns_per_task: 2\nmax_new_tokens: " +
          std::to_string(kNewTokens) + "\nheldout_loss: false\n",
      ConfigSource{"eval.yaml", testing::source_dir(), {}});
}

// The first scored turn's prompt, as eval renders it (the gold history before the turn).
std::vector<int64_t> prompt_of(const EvalInputs& in, const TurnResult& t) {
  const auto rec = std::find_if(in.records.begin(), in.records.end(),
                                [&](const HeldOutRecord& r) { return r.conv.id == t.record_id; });
  EXPECT_NE(rec, in.records.end()) << t.record_id;
  Conversation history = rec->conv;
  history.turns.resize(t.turn);
  const auto ids = in.tmpl->generation_prompt_ids(history, *in.tok);
  return {ids.begin(), ids.end()};
}

std::string text(const Tokenizer& tok, const std::vector<int64_t>& ids, size_t n) {
  return tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<int64_t>(n)));
}

TEST(EvalStops, RepliesEndAtEveryEosIdOfTheModel) {
  const auto tok = testing::shared_fixture("llama2-tokenizer.model");
  if (tok.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  const auto dir = testing::scratch_dir() / "model";
  const LlamaConfig shape = testing::tiny_llama(32000, 64, 96, 2, 4, 2, 2048);
  auto initial = make_llama(shape, 11);
  save_pretrained(initial, dir);
  auto loaded = load_pretrained(dir);
  ASSERT_EQ(loaded.eos_token_ids, std::vector<int64_t>{shape.eos_token_id});
  const auto cfg = os_turns();

  // The template's stops only: the reply the model writes, and the same tokens from generate().
  const auto plain = load_eval_inputs(cfg, tok, shape.vocab_size, loaded.eos_token_ids);
  EXPECT_EQ(plain.stop_ids, std::vector<int64_t>{2}) << "agentlm ends a turn with </s>, the model's eos";
  const auto before = run_eval(*plain_eval_model(loaded.model), plain);
  ASSERT_FALSE(before.turns.empty());
  const auto& first = before.turns.front();
  SamplingOptions greedy;
  greedy.max_new_tokens = kNewTokens;
  greedy.stop_ids = plain.stop_ids;
  const auto written = generate(loaded.model, prompt_of(plain, first), greedy);
  ASSERT_FALSE(written.stopped) << "the random model wrote </s>: pick another seed";
  ASSERT_EQ(first.reply, text(*plain.tok, written.tokens, written.tokens.size()));

  // The first token of the reply after its start that it has not written before becomes the
  // folder's second eos id, in generation_config.json only (config.json keeps its one id).
  size_t cut = 1;
  while (cut < written.tokens.size() &&
         std::count(written.tokens.begin(), written.tokens.begin() + static_cast<int64_t>(cut), written.tokens[cut]))
    ++cut;
  ASSERT_LT(cut, written.tokens.size()) << "the reply repeats one token";
  const int64_t second_eos = written.tokens[cut];
  auto gen = read_json_file(dir / "generation_config.json");
  gen["eos_token_id"] = {shape.eos_token_id, second_eos};
  write_file_atomic(dir / "generation_config.json", gen.dump(2));
  loaded = load_pretrained(dir);
  ASSERT_EQ(loaded.eos_token_ids, (std::vector<int64_t>{shape.eos_token_id, second_eos}));

  const auto with_eos = load_eval_inputs(cfg, tok, shape.vocab_size, loaded.eos_token_ids);
  EXPECT_EQ(with_eos.stop_ids, (std::vector<int64_t>{2, second_eos}));  // the template's first, no repeat
  const auto after = run_eval(*plain_eval_model(loaded.model), with_eos);
  ASSERT_EQ(after.turns.size(), before.turns.size());
  EXPECT_EQ(after.turns.front().reply, text(*plain.tok, written.tokens, cut)) << "cut before token " << second_eos;
  EXPECT_NE(after.turns.front().reply, first.reply);
}

// A template whose added tokens the model has no rows for (chatml's five, from <pad> = 32000, on a
// Llama-2 vocabulary of 32000) is refused before any forward, naming the template and the token.
TEST(EvalStops, TemplateTokensOutsideTheVocabularyAreRefusedByName) {
  const auto tok = testing::shared_fixture("llama2-tokenizer.model");
  if (tok.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto cfg = os_turns();
  cfg.chat_template = "chatml";
  const auto error = testing::error_of([&] { load_eval_inputs(cfg, tok, 32000, {2}); });
  EXPECT_NE(error.find("eval: template chatml needs token <pad> (id 32000), outside the model's 32000 tokens"),
            std::string::npos)
      << error;
  // With the rows: <|im_end|> and 0 (FastChat's Lemur stops), then the model's eos.
  EXPECT_EQ(load_eval_inputs(cfg, tok, 32005, {2}).stop_ids, (std::vector<int64_t>{32002, 0, 2}));
}

}  // namespace
}  // namespace agenttune::eval
