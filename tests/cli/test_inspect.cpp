// `agenttune inspect` through the real command line: its counts are exactly what `prepare`
// writes, it writes nothing itself, and the highlighted spans are the assistant answers.
#include <gtest/gtest.h>

#include <regex>

#include "agenttune/data/token_shards.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

using testing::agenttune;
using testing::Run;

// The tiny SFT prepare config with its outputs moved into `dir`.
std::string tiny_sft(const fs::path& dir) {
  const auto cfg = testing::source_dir() / "configs/tiny/sft_prepare.yaml";
  return "--config " + cfg.string() + " --set datasets.0.output=" + (dir / "agentinstruct").string() +
         " --set datasets.1.output=" + (dir / "sharegpt").string();
}

std::vector<std::string> trained_spans(const std::string& text) {
  std::vector<std::string> spans;
  const std::string open = "⟦", close = "⟧";
  // After the legend line, which shows the markers itself.
  for (size_t at = text.find(open, text.find("\n── ")); at != std::string::npos; at = text.find(open, at)) {
    size_t end = text.find(close, at);
    if (end == std::string::npos) break;
    spans.push_back(text.substr(at + open.size(), end - at - open.size()));
    at = end;
  }
  return spans;
}

class Inspect : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::shared_fixture("llama2-tokenizer.model").empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  }
};

TEST_F(Inspect, SftCountsEqualWhatPrepareWritesAndNothingIsWritten) {
  auto dir = testing::scratch_dir();
  auto r = agenttune("inspect --plain --samples 2 " + tiny_sft(dir / "inspect"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_FALSE(fs::exists(dir / "inspect")) << "inspect wrote output folders";

  auto p = agenttune("prepare --no-progress " + tiny_sft(dir / "prepared"));
  ASSERT_EQ(p.rc, 0) << p.out;
  for (const std::string name : {"agentinstruct", "sharegpt"}) {
    auto m = ShardManifest::read(dir / "prepared" / name / "manifest.json");
    // dataset samples kept truncated documents tokens trained ...
    std::regex row("\n" + name + R"( +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) )");
    std::smatch mm;
    ASSERT_TRUE(std::regex_search(r.out, mm, row)) << "no count row for " << name << " in:\n" << r.out;
    EXPECT_EQ(std::stoll(mm[4]), m.documents) << name;
    EXPECT_EQ(std::stoll(mm[5]), m.tokens) << name;
    EXPECT_EQ(std::stoll(mm[6]), m.trained_tokens) << name;
  }
}

TEST_F(Inspect, TrainedSpansAreTheAssistantAnswersWithTheirEos) {
  auto r = agenttune("inspect --plain --samples 3 --dataset sharegpt " + tiny_sft(testing::scratch_dir()));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("── agentinstruct sample"), std::string::npos) << "--dataset did not filter";
  ASSERT_NE(r.out.find("── sharegpt sample"), std::string::npos) << r.out;
  auto spans = trained_spans(r.out);
  ASSERT_GE(spans.size(), 3u) << r.out;
  for (const auto& s : spans) {
    // llama-2-chat trains the answer and the EOS closing its pair, never the prompt markers.
    EXPECT_TRUE(s.size() >= 4 && s.compare(s.size() - 4, 4, "</s>") == 0) << "span: " << s;
    EXPECT_EQ(s.find("[INST]"), std::string::npos) << "span: " << s;
    EXPECT_EQ(s.find("<<SYS>>"), std::string::npos) << "span: " << s;
  }
  // The prompt side stays outside the spans.
  EXPECT_NE(r.out.find("[/INST]⟦"), std::string::npos) << r.out;
}

// The byte-level BPE templates on their real tokenizers: the spans are the answers with their end
// token, shown as text (not the tokens' GPT-2 byte-mapped spellings "Ġ", "Ċ").
TEST_F(Inspect, ByteLevelTemplatesShowAnswersAsText) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  for (const char* family : {"llama3", "qwen2.5", "qwen3"})
    if (!fs::exists(deps / family / "tokenizer.json")) GTEST_SKIP() << "no " << family << " tokenizer.json in " << deps;
  struct Case {
    std::string tmpl, folder, header, end;
  };
  for (const Case& c : {Case{"qwen2.5", "qwen2.5", "<|im_start|>assistant\n", "<|im_end|>"},
                        Case{"llama-3", "llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"},
                        // Qwen3 trains its think block; without thinking the block is prompt, outside the span.
                        Case{"qwen3", "qwen3", "<|im_start|>assistant\n", "<|im_end|>"},
                        Case{"qwen3-no-think", "qwen3", "</think>\n\n", "<|im_end|>"}}) {
    auto r = agenttune("inspect --plain --samples 2 --dataset sharegpt " + tiny_sft(testing::scratch_dir()) +
                       " --set tokenizer=" + (deps / c.folder).string() + " --set template=" + c.tmpl);
    ASSERT_EQ(r.rc, 0) << r.out;
    const auto spans = trained_spans(r.out);
    ASSERT_GE(spans.size(), 2u) << r.out;
    for (const auto& s : spans) {
      EXPECT_TRUE(s.size() > c.end.size() && s.compare(s.size() - c.end.size(), c.end.size(), c.end) == 0)
          << c.tmpl << " span: " << s;
      EXPECT_EQ(s.find(c.header), std::string::npos) << c.tmpl << " span: " << s;
    }
    EXPECT_NE(r.out.find(c.header + "⟦"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Ġ"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Ċ"), std::string::npos) << r.out;
  }
}

// A SentencePiece template (it opens with <s>) on Qwen's tokenizer, which has no BOS: inspect and
// prepare refuse before any record, naming template and tokenizer (not a token id -1).
TEST_F(Inspect, SentencePieceTemplateOnATokenizerWithoutBosIsRefused) {
  const auto qwen = testing::source_dir() / ".deps/tokenizers/qwen2.5";
  if (!fs::exists(qwen / "tokenizer.json")) GTEST_SKIP() << "no " << qwen;
  const auto dir = testing::scratch_dir();
  const std::string args = tiny_sft(dir) + " --set tokenizer=" + qwen.string() + " --set template=agentlm";
  for (const std::string cmd : {"inspect --plain --samples 1 ", "prepare --no-progress "}) {
    const auto r = agenttune(cmd + args);
    EXPECT_NE(r.rc, 0) << cmd << r.out;
    EXPECT_NE(r.out.find("chat template agentlm opens every conversation with BOS <s>, but tokenizer " +
                         (qwen / "tokenizer.json").string() + " has no BOS token"),
              std::string::npos) << cmd << r.out;
    EXPECT_EQ(r.out.find("<id -1?>"), std::string::npos) << r.out;
  }
  EXPECT_FALSE(fs::exists(dir / "agentinstruct")) << "prepare wrote output";
}

TEST_F(Inspect, ColourMarksTrainedTokensAndPlainHasNoEscapes) {
  auto args = " --samples 1 --dataset sharegpt " + tiny_sft(testing::scratch_dir());
  auto colour = agenttune("inspect --color" + args);
  ASSERT_EQ(colour.rc, 0) << colour.out;
  EXPECT_NE(colour.out.find("\x1b[1;32m"), std::string::npos);
  auto plain = agenttune("inspect --plain" + args);  // and stdout is a pipe here: no colour by default
  EXPECT_EQ(plain.out.find("\x1b["), std::string::npos);
  EXPECT_EQ(agenttune("inspect" + args).out.find("\x1b["), std::string::npos);
  EXPECT_NE(agenttune("inspect --plain --color" + args).rc, 0) << "the two styles exclude each other";
}

TEST_F(Inspect, TrainConfigShowsPaddedRowsAndSourceShares) {
  auto dir = testing::scratch_dir();
  ASSERT_EQ(agenttune("prepare --no-progress " + tiny_sft(dir)).rc, 0);
  const auto cfg = testing::source_dir() / "configs/tiny/sft.yaml";
  auto r = agenttune("inspect --plain --samples 4 --config " + cfg.string() + " --set data.packing=pad" +
                     " --set data.sources.0.path=" + (dir / "agentinstruct").string() +
                     " --set data.sources.1.path=" + (dir / "sharegpt").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("── row 4:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" pad]"), std::string::npos) << "padded rows should show their padding:\n" << r.out;
  EXPECT_NE(r.out.find("\nagentinstruct "), std::string::npos);
  EXPECT_NE(r.out.find("\nsharegpt "), std::string::npos);
}

// The issue's reproduction: the tiny SFT data at data.seq_len 64 used to train `Think: ...` in a
// row whose only context was the tail of the previous turn. At 64 no AgentInstruct answer fits
// with its task protocol, so that is now a clear error; at 256 most are truncated to their last
// whole answer. Every row segment that trains a token must hold its conversation's first turn
// (AgentLM's system prompt), and the counts inspect shows are the ones the trainer logs.
TEST_F(Inspect, LongConversationsAreNeverTrainedWithoutTheirFirstTurn) {
  auto dir = testing::scratch_dir();
  ASSERT_EQ(agenttune("prepare --no-progress " + tiny_sft(dir)).rc, 0);
  const auto cfg = testing::source_dir() / "configs/tiny/sft.yaml";
  const std::string sources = " --set data.sources.0.path=" + (dir / "agentinstruct").string() +
                              " --set data.sources.1.path=" + (dir / "sharegpt").string();
  auto tiny = agenttune("inspect --plain --config " + cfg.string() + sources + " --set data.seq_len=64");
  EXPECT_EQ(tiny.rc, 2) << tiny.out;
  EXPECT_NE(tiny.out.find("'agentinstruct'"), std::string::npos) << tiny.out;
  EXPECT_NE(tiny.out.find("no training documents (data.overlength truncate dropped 20 conversation(s) longer than "
                          "data.seq_len 64)"),
            std::string::npos)
      << tiny.out;

  const std::string data = sources + " --set data.seq_len=256";
  auto r = agenttune("inspect --plain --samples 12 --config " + cfg.string() + data);
  ASSERT_EQ(r.rc, 0) << r.out;
  int trained_segments = 0;
  for (size_t at = r.out.find("\n── row "); at != std::string::npos;) {
    const size_t next = r.out.find("\n── row ", at + 1);
    const size_t body = r.out.find('\n', at + 1);
    const std::string row = r.out.substr(body, (next == std::string::npos ? r.out.find("\nsource ", at) : next) - body);
    size_t from = 0;
    for (size_t cut; from <= row.size(); from = cut + std::string("║").size()) {
      cut = row.find("║", from);
      if (cut == std::string::npos) cut = row.size();
      const std::string segment = row.substr(from, cut - from);
      const size_t trained = segment.find("⟦");
      if (trained != std::string::npos) {
        ++trained_segments;
        EXPECT_NE(segment.substr(0, trained).find("<<SYS>>"), std::string::npos)
            << "trained without the conversation's first turn:\n" << segment;
      }
      if (cut == row.size()) break;
    }
    at = next;
  }
  EXPECT_GE(trained_segments, 10) << r.out;

  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(seq_len agentinstruct, overlength truncate: (\d+) of (\d+) conv)")))
      << r.out;
  const std::string counts = m[1].str() + " of " + m[2].str() + " conv";
  EXPECT_GT(std::stoll(m[1]), 0);
  auto t = agenttune("train --config " + cfg.string() + data + " --set train.max_steps=1 --set output_dir=" +
                     (dir / "run").string() + " --set metrics.tensorboard=false");
  ASSERT_EQ(t.rc, 0) << t.out;
  EXPECT_NE(t.out.find("data source 'agentinstruct' (data.overlength truncate): " + counts), std::string::npos)
      << "inspect said " << counts << "; the trainer logged:\n" << t.out;
}

TEST_F(Inspect, AnUnknownDatasetIsAnErrorNamingIt) {
  auto r = agenttune("inspect --dataset nosuch " + tiny_sft(testing::scratch_dir()));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("nosuch"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace agenttune
