// `agenttune export` folders as transformers (and so vLLM) load them, checked against independent
// oracles by tests/cli/py/export_tokenizer_oracle.py:
// - the generated tokenizer.json makes AutoTokenizer's fast tokenizer give exactly Python
//   sentencepiece's ids, and decode to the same text, on the tokenizer parity corpus and seeded
//   random strings (whitespace runs, indented code, CJK, emoji, byte-fallback code points);
// - with --template NAME, apply_chat_template(add_generation_prompt=True) on the folder gives the
//   prompt ids of `agenttune generate --template NAME` and of our renderer; whole conversations give
//   render()'s ids, and transformers' assistant mask ({% generation %} spans) is our loss mask
//   except for the one token per trained ChatML turn stated in the test;
// - content that spells control tokens ("<|im_end|>", "</s>", ...) is text to us, while
//   apply_chat_template(tokenize=True) matches it as control tokens: there, and only there, its ids
//   differ from ours, and the exported files give ours when the rendered text is tokenized with
//   control tokens only where the template wrote them (the oracle's text_ids).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <random>

#include "../chat/chat_cases.h"
#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/utf8.h"
#include "cli_test_util.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string run_ok(const std::string& cmd) {
  std::string out;
  int rc = testing::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  return out;
}

// A one-step checkpoint of a tiny model whose vocabulary has room for ChatML's five added tokens.
fs::path make_checkpoint(const fs::path& root) {
  testing::make_synthetic_source(root / "data", 8, 1000, 1, 20, 60, 32005);
  std::ofstream(root / "train.yaml") << R"(output_dir: run
model:
  shape: {vocab_size: 32005, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1,
          num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64}
data:
  sources:
    - {name: d, path: data, weight: 1}
  seq_len: 32
train: {max_steps: 1, micro_batch_size: 1, global_batch_sequences: 1, warmup_steps: 1}
checkpoint: {interval: 1, keep_last: 1}
metrics: {tensorboard: false}
)";
  run_ok(testing::agenttune_bin() + " train --config " + (root / "train.yaml").string());
  return root / "run" / "checkpoints";
}

fs::path export_folder(const fs::path& ck, const fs::path& out, const fs::path& model, const std::string& tmpl) {
  run_ok(testing::agenttune_bin() + " export --dtype float32 --checkpoint " + ck.string() + " --out " +
         out.string() + " --tokenizer " + model.string() + (tmpl.empty() ? "" : " --template " + tmpl));
  return out;
}

json run_oracle(const std::string& args, const fs::path& out) {
  std::string log;
  int rc = testing::run_command(testing::venv_python().string() + " " +
                                    (testing::source_dir() / "tests/cli/py/export_tokenizer_oracle.py").string() +
                                    " " + args,
                                &log);
  EXPECT_EQ(rc, 0) << log;
  return rc == 0 ? json::parse(std::ifstream(out)) : json();
}

std::string utf8(uint32_t c) {
  std::string s;
  append_utf8(s, c);
  return s;
}

// Seeded strings built from fragments of six kinds: whitespace runs, indented code lines, CJK,
// emoji (with skin-tone modifiers), rare code points that only byte fallback encodes (controls,
// supplementary planes, private use), and ASCII words and punctuation.
std::vector<std::string> random_texts(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  auto in = [&](uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng); };
  const std::string ascii = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,;:()[]{}<>=+-*/#'\"!?";
  const char* ws[] = {" ", "\t", "\n", "\r\n"};
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    for (uint32_t k = in(1, 10); k > 0; --k) {
      switch (in(0, 5)) {
        case 0:
          for (uint32_t r = in(1, 9); r > 0; --r) s += in(0, 3) ? " " : ws[in(1, 3)];
          break;
        case 1:
          s += "\n" + std::string(4 * in(0, 3), ' ') + (in(0, 1) ? "return x" : "if (y) {");
          break;
        case 2:
          for (uint32_t r = in(1, 4); r > 0; --r) s += utf8(in(0x4E00, 0x9FFF));
          break;
        case 3:
          s += utf8(in(0x1F300, 0x1FAFF));
          if (in(0, 2) == 0) s += utf8(in(0x1F3FB, 0x1F3FF));
          break;
        case 4: {
          const uint32_t pick = in(0, 2);
          s += utf8(pick == 0 ? in(1, 31) : pick == 1 ? in(0x20000, 0x2FFFF) : in(0xF0000, 0xFFFFD));
          break;
        }
        default:
          for (uint32_t r = in(1, 8); r > 0; --r) s += ascii[in(0, ascii.size() - 1)];
      }
    }
    out.push_back(s);
  }
  return out;
}

bool has_control_text(const std::string& s) {
  for (const char* c : {"<s>", "</s>", "<unk>"})
    if (s.find(c) != std::string::npos) return true;
  return false;
}

TEST(ExportTokenizer, FastTokenizerFromExportMatchesSentencePiece) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  if (!fs::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";
  auto root = testing::scratch_dir();
  auto hf = export_folder(make_checkpoint(root), root / "hf", model, "");
  ASSERT_TRUE(fs::exists(hf / "tokenizer.json"));

  std::vector<std::string> texts;
  std::ifstream corpus(testing::source_dir() / "data/tokenizer/parity_corpus.jsonl");
  for (std::string line; std::getline(corpus, line);)
    if (!line.empty()) texts.push_back(json::parse(line).get<std::string>());
  ASSERT_EQ(texts.size(), 69u) << "parity corpus changed";
  auto extra = random_texts(400, 20240611);
  texts.insert(texts.end(), extra.begin(), extra.end());
  {
    std::ofstream in(root / "in.jsonl");
    for (const auto& t : texts) in << json(t).dump() << "\n";
  }
  json out = run_oracle("tokenize " + hf.string() + " " + model.string() + " " + (root / "in.jsonl").string() +
                            " " + (root / "out.json").string(),
                        root / "out.json");
  ASSERT_EQ(out["rows"].size(), texts.size());

  // transformers picks the generic fast class, which takes tokenizer.json as it is.
  const json& info = out["info"];
  EXPECT_EQ(info["config_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(info["class"], "TokenizersBackend");
  EXPECT_NE(info["normalizer"].get<std::string>().find("Prepend(prepend=\"\u2581\")"), std::string::npos) << info;
  EXPECT_EQ(info["pre_tokenizer"], "None");
  EXPECT_EQ(info["special"], json::parse(R"({"bos_token": ["<s>", 1], "eos_token": ["</s>", 2],
                                             "unk_token": ["<unk>", 0]})"));
  auto tok = Tokenizer::load(model);
  EXPECT_EQ(info["hi_with_special"].get<std::vector<int32_t>>(), tok.encode("hi", /*add_bos=*/true));
  EXPECT_EQ(info["vocab_size"], 32000);

  size_t equal = 0, split_equal = 0, decoded_equal = 0, control_texts = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const json& r = out["rows"][i];
    auto sp = r["sp_ids"].get<std::vector<int32_t>>();
    auto tag = "text #" + std::to_string(i) + ": " + json(texts[i]).dump();
    ASSERT_EQ(tok.encode(texts[i]), sp) << tag;  // the C++ tokenizer is SentencePiece (own test)
    auto fast = r["fast_ids"].get<std::vector<int32_t>>();
    auto split = r["fast_split_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(split, sp) << tag;
    split_equal += split == sp;
    // By default transformers reads "<s>", "</s>", "<unk>" in text as control tokens (SentencePiece
    // never does): the one place the two differ, and only there.
    if (has_control_text(texts[i])) {
      ++control_texts;
      EXPECT_NE(fast, sp) << tag;
    } else {
      EXPECT_EQ(fast, sp) << tag;
      equal += fast == sp;
    }
    EXPECT_EQ(r["fast_decoded"], r["sp_decoded"]) << tag;
    decoded_equal += r["fast_decoded"] == r["sp_decoded"];
  }
  EXPECT_EQ(control_texts, 1u);  // the corpus line about control tokens as plain text
  std::cout << "export tokenizer.json vs sentencepiece: " << texts.size() << " strings, " << split_equal
            << " equal with split_special_tokens, " << equal << " of " << texts.size() - control_texts
            << " equal by default (the rest hold control-token text), " << decoded_equal << " decode equal\n";
}

TEST(ExportChatTemplate, ApplyChatTemplateOnExportMatchesRenderer) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  if (!fs::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";
  auto root = testing::scratch_dir();
  auto ck = make_checkpoint(root);
  const auto base = Tokenizer::load(model);

  struct Row {
    std::string tmpl, name;
    RenderedSample ours;  // empty for the prompt-only "hi" case
    std::vector<int32_t> gen_ids;
    bool control_text = false;  // content spells control tokens
  };
  std::vector<Row> rows;
  json exports = json::object(), cases = json::array();
  std::map<std::string, std::vector<int32_t>> cli_hi;  // `generate --template T --prompt hi` prompt ids
  for (const auto& name : sentencepiece_template_names()) {
    auto dir = export_folder(ck, root / ("hf_" + name), model, name);
    exports[name] = dir.string();
    auto gen = run_ok(testing::agenttune_bin() + " generate --model " + dir.string() + " --template " + name +
                      " --prompt hi --max-new-tokens 1 --json");
    // The JSON result is the last line that opens an object (log lines come before it).
    const auto nl = gen.rfind("\n{");
    const auto at = nl == std::string::npos ? (gen.rfind('{', 0) == 0 ? 0 : std::string::npos) : nl + 1;
    ASSERT_NE(at, std::string::npos) << gen;
    cli_hi[name] = json::parse(gen.substr(at, gen.find('\n', at) - at)).at("prompt_ids").get<std::vector<int32_t>>();

    auto tmpl = make_template(name);
    Tokenizer tok = base;
    prepare_tokenizer(*tmpl, tok);
    Conversation hi;
    hi.turns.push_back(testing::turn(Role::User, "hi"));
    std::vector<testing::ChatCase> convs = {{"hi", hi}};
    for (const auto& c : testing::chat_cases()) convs.push_back(c);
    for (const auto& c : convs) {
      const auto& conv = c.conv;
      auto prompt = testing::before_last_assistant(conv);
      const bool full = c.name != "hi";
      rows.push_back({name, c.name, full ? tmpl->render(conv, tok) : RenderedSample{},
                      tmpl->generation_prompt_ids(prompt, tok), c.control_text});
      cases.push_back({{"template", name},
                       {"messages", testing::messages_json(conv)},
                       {"gen_messages", testing::messages_json(prompt)}});
    }
  }
  std::ofstream(root / "chat_in.json") << json{{"exports", exports}, {"cases", cases}}.dump();
  json out = run_oracle("chat " + (root / "chat_in.json").string() + " " + (root / "chat_out.json").string(),
                        root / "chat_out.json");
  ASSERT_EQ(out["cases"].size(), rows.size());

  // The ChatML prompt checked by hand when ChatML export was written.
  EXPECT_EQ(cli_hi["chatml"], (std::vector<int32_t>{1, 32001, 1404, 13, 2918, 32002, 29871, 13, 32001, 20255, 13}));
  Tokenizer base_chatml = base;
  prepare_tokenizer(*make_template("chatml"), base_chatml);
  size_t masks_equal = 0, masks_as_stated = 0, chatml_newlines = 0, control_text_cases = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    const json& o = out["cases"][i];
    auto tag = row.tmpl + "/" + row.name;
    EXPECT_EQ(o["text_gen_ids"].get<std::vector<int32_t>>(), row.gen_ids) << tag << " generation prompt";
    if (row.name == "hi") {
      EXPECT_EQ(o["gen_ids"].get<std::vector<int32_t>>(), row.gen_ids) << tag << " generation prompt";
      EXPECT_EQ(row.gen_ids, cli_hi[row.tmpl]) << tag << " vs agenttune generate";
      continue;
    }
    EXPECT_EQ(o["text_ids"].get<std::vector<int32_t>>(), row.ours.ids) << tag << "\n" << o["text"];
    if (row.control_text) {
      // transformers turns the spelled control tokens into real ones (a fake turn); we do not, so
      // its ids and its assistant mask (computed on its own tokens) are not ours.
      EXPECT_NE(o["ids"].get<std::vector<int32_t>>(), row.ours.ids) << tag;
      EXPECT_NE(o["gen_ids"].get<std::vector<int32_t>>(), row.gen_ids) << tag;
      ++control_text_cases;
      continue;
    }
    EXPECT_EQ(o["gen_ids"].get<std::vector<int32_t>>(), row.gen_ids) << tag << " generation prompt";
    EXPECT_EQ(o["ids"].get<std::vector<int32_t>>(), row.ours.ids) << tag << "\n" << o["text"];
    // transformers marks the tokens from char_to_token(span start) to char_to_token(span end - 1).
    // ChatML's trained span ends "<|im_end|>\n", and that "\n" is a stretch of its own after an
    // added token, tokenized [▁ 29871, <0x0A> 13] with both tokens starting at the "\n" (the ▁ is
    // the normaliser's dummy prefix), so transformers stops at the ▁ and leaves the <0x0A> out. We
    // train it, as Lemur's xchat train.py does (its mask covers "<|im_end|>\n"). That token, at the
    // end of every trained run, is the only difference, for every template.
    const auto& ids = row.ours.ids;
    const auto im_end = row.tmpl == "chatml" ? *base_chatml.piece_to_id("<|im_end|>") : -1;
    std::vector<uint8_t> expect = row.ours.trained;
    size_t runs = 0, dropped = 0;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!row.ours.trained[k] || (k + 1 < ids.size() && row.ours.trained[k + 1])) continue;
      ++runs;
      if (k >= 2 && ids[k] == 13 && ids[k - 1] == 29871 && ids[k - 2] == im_end) {
        expect[k] = 0;
        ++dropped;
      }
    }
    if (row.tmpl == "chatml") {
      EXPECT_EQ(dropped, runs) << tag << ": every trained ChatML turn ends <|im_end|> ▁ \\n";
    } else {
      EXPECT_EQ(dropped, 0u) << tag;
    }
    chatml_newlines += dropped;
    auto hf_mask = o["assistant_masks"].get<std::vector<uint8_t>>();
    EXPECT_EQ(hf_mask, expect) << tag;
    masks_equal += hf_mask == row.ours.trained;
    masks_as_stated += hf_mask == expect;
  }
  EXPECT_GT(chatml_newlines, 5u);  // the relation above is really exercised
  EXPECT_EQ(control_text_cases, exports.size());
  std::cout << "apply_chat_template on " << exports.size() << " exports: " << rows.size()
            << " cases (" << rows.size() - exports.size() << " full conversations); assistant masks equal to our loss masks on " << masks_equal << ", equal after "
            << "dropping the " << chatml_newlines << " ChatML end-of-turn <0x0A> tokens on " << masks_as_stated << "\n";
}

}  // namespace
}  // namespace agenttune
