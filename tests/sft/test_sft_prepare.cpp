// prepare_sft on the bundled samples: the shards hold exactly the template's render() ids per
// sample and the masks exactly its `trained` vector, for llama-2-chat, agent-flan and chatml; the
// report counts what happened; truncation policies; errors; determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::Doc;
using testing::read_docs;
using testing::sample;

const std::vector<std::string> kSamples = {"agentinstruct.jsonl", "sharegpt.json", "toolbench_sft.json",
                                           "agentflan.jsonl", "openai_messages.jsonl"};

std::string stem(const std::string& file) { return file.substr(0, file.find('.')); }

struct Expected {
  std::vector<Doc> docs;
  int64_t read = 0, render_errors = 0, untrained = 0;
};

// What prepare_sft must write for `d` (no transforms, no truncation, upsample 1), computed
// independently: read, render every conversation, keep those with a trained token.
Expected expected_for(const SftDatasetConfig& d, const std::string& tmpl_name) {
  auto tmpl = make_template(tmpl_name);
  Tokenizer tok = testing::tokenizer_for(*tmpl);
  ReadReport rr;
  Expected e;
  for (const auto& c : read_dataset(DatasetSpec{d.name, d.paths, d.format, d.policies}, rr)) {
    ++e.read;
    RenderedSample s;
    try {
      s = tmpl->render(c, tok);
    } catch (const Error&) {
      ++e.render_errors;
      continue;
    }
    if (s.num_trained() == 0) {
      ++e.untrained;
      continue;
    }
    e.docs.push_back({s.ids, s.trained});
  }
  return e;
}

class SftTemplates : public ::testing::TestWithParam<std::string> {};

TEST_P(SftTemplates, ShardsHoldTheRenderingAndItsMask) {
  REQUIRE_TOKENIZER();
  const std::string tmpl = GetParam();
  auto dir = testing::scratch_dir();
  SftPrepareConfig cfg = testing::base_config(tmpl);
  for (const auto& f : kSamples) {
    auto d = testing::dataset(stem(f), sample(f), dir / stem(f));
    d.policies.bad_record = OnProblem::Drop;  // samples a template cannot express are counted
    cfg.datasets.push_back(d);
  }
  cfg.max_seq_len = 0;
  SftPrepareReport report = prepare_sft(cfg);
  ASSERT_EQ(report.datasets.size(), kSamples.size());
  auto tok = testing::tokenizer_for(*make_template(tmpl));
  int64_t docs_total = 0;
  for (size_t i = 0; i < kSamples.size(); ++i) {
    SCOPED_TRACE(kSamples[i]);
    const auto& r = report.datasets[i];
    Expected e = expected_for(cfg.datasets[i], tmpl);
    auto docs = read_docs(cfg.datasets[i].output);
    ASSERT_EQ(docs.size(), e.docs.size());
    for (size_t k = 0; k < docs.size(); ++k) {
      EXPECT_EQ(docs[k].ids, e.docs[k].ids) << "document " << k;
      EXPECT_EQ(docs[k].mask, e.docs[k].mask) << "document " << k;
    }
    int64_t tokens = 0, trained = 0;
    for (const auto& d : e.docs) {
      tokens += static_cast<int64_t>(d.ids.size());
      trained += std::count(d.mask.begin(), d.mask.end(), uint8_t{1});
    }
    EXPECT_EQ(r.name, stem(kSamples[i]));
    EXPECT_EQ(r.samples_in, e.read);
    EXPECT_EQ(r.samples_in, r.read.kept);
    EXPECT_EQ(r.kept, static_cast<int64_t>(e.docs.size()));
    EXPECT_EQ(r.documents, r.kept);
    EXPECT_EQ(r.tokens, tokens);
    EXPECT_EQ(r.trained_tokens, trained);
    EXPECT_EQ(r.overlength.over, 0);
    EXPECT_EQ(r.dropped.contains("render_error") ? r.dropped.at("render_error") : 0, e.render_errors);
    EXPECT_EQ(r.dropped.contains("untrained") ? r.dropped.at("untrained") : 0, e.untrained);
    int64_t dropped = 0;
    for (const auto& [k, v] : r.dropped) dropped += v;
    EXPECT_EQ(r.kept + dropped, r.samples_in);
    // The manifest: base .model fingerprint, the template's added tokens, counts, the input file.
    const auto& m = ShardManifest::read(cfg.datasets[i].output / "manifest.json");
    EXPECT_TRUE(m.has_mask);
    EXPECT_EQ(m.tokenizer_sha256, tok.fingerprint());
    EXPECT_EQ(m.vocab_size, tok.vocab_size());
    EXPECT_EQ(m.tokens, tokens);
    EXPECT_EQ(m.trained_tokens, trained);
    ASSERT_EQ(m.sources.size(), 1u);
    EXPECT_EQ(m.sources[0].documents, r.kept);
    EXPECT_EQ(m.sources[0].skipped, dropped);
    EXPECT_EQ(m.sources[0].sha256.size(), 64u);
    docs_total += r.kept;
  }
  EXPECT_GT(docs_total, 15);  // most samples render under every template
}

INSTANTIATE_TEST_SUITE_P(Templates, SftTemplates, ::testing::Values("llama-2-chat", "agent-flan", "chatml"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(SftPrepare, ChatMlManifestRecordsTheAddedTokens) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = testing::base_config("chatml");
  cfg.datasets.push_back(testing::dataset("sg", sample("sharegpt.json"), dir / "sg"));
  prepare_sft(cfg);
  auto m = ShardManifest::read(dir / "sg" / "manifest.json");
  EXPECT_EQ(m.added_tokens, make_template("chatml")->added_tokens());
  EXPECT_EQ(m.vocab_size, 32000 + static_cast<int64_t>(m.added_tokens.size()));
  EXPECT_EQ(m.tokenizer_sha256, Tokenizer::load(testing::llama2_model()).fingerprint());
  auto docs = read_docs(dir / "sg");
  ASSERT_FALSE(docs.empty());
  EXPECT_EQ(docs[0].ids[1], 32001);  // <|im_start|> right after BOS
}

// The agentinstruct sample under llama-2-chat at a limit that cuts some samples.
struct Cut {
  std::vector<Doc> full;
  int64_t limit = 0;
};
Cut cut_setup() {
  auto tmpl = make_template("llama-2-chat");
  auto tok = testing::tokenizer_for(*tmpl);
  ReadReport rr;
  Cut c;
  for (const auto& conv : read_dataset({"ai", {sample("agentinstruct.jsonl")}, DatasetFormat::Auto, {}}, rr)) {
    auto s = tmpl->render(conv, tok);
    c.full.push_back({s.ids, s.trained});
  }
  std::vector<size_t> lens;
  for (const auto& d : c.full) lens.push_back(d.ids.size());
  std::sort(lens.begin(), lens.end());
  c.limit = static_cast<int64_t>(lens[lens.size() / 2]);  // the median: about half are too long
  return c;
}

SftDatasetReport run_cut(const fs::path& out, int64_t limit, Overlength policy) {
  auto cfg = testing::base_config("llama-2-chat");
  cfg.datasets.push_back(testing::dataset("ai", sample("agentinstruct.jsonl"), out));
  cfg.max_seq_len = limit;
  cfg.overlength = policy;
  return prepare_sft(cfg).datasets.at(0);
}

// The answers of a document: maximal runs of trained tokens, [begin, end).
std::vector<std::pair<size_t, size_t>> answers(const Doc& d) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t t = 1; t < d.mask.size(); ++t)
    if (d.mask[t] != 0) {
      if (!out.empty() && out.back().second == t) out.back().second = t + 1;
      else out.push_back({t, t + 1});
    }
  return out;
}

TEST(SftPrepare, OverlengthPoliciesKeepWholeAnswersWithTheirPrompt) {
  REQUIRE_TOKENIZER();
  Cut c = cut_setup();
  const int64_t L = c.limit;
  int64_t too_long = 0;
  for (const auto& d : c.full) too_long += static_cast<int64_t>(d.ids.size()) > L;
  ASSERT_GT(too_long, 0);
  auto dir = testing::scratch_dir();

  auto drop = run_cut(dir / "drop", L, Overlength::Drop);
  EXPECT_EQ(drop.dropped["too_long"], too_long);
  EXPECT_EQ(drop.kept, static_cast<int64_t>(c.full.size()) - too_long);
  EXPECT_EQ(drop.overlength.over, too_long);
  EXPECT_EQ(drop.overlength.dropped, too_long);
  std::vector<Doc> short_ones;
  for (const auto& d : c.full)
    if (static_cast<int64_t>(d.ids.size()) <= L) short_ones.push_back(d);
  EXPECT_EQ(read_docs(dir / "drop"), short_ones);

  // truncate, computed here: the prefix up to the end of the last answer that fits; none fits ->
  // dropped. Every kept trained token has the conversation's own beginning before it.
  std::vector<Doc> want;
  int64_t none_fits = 0, lost = 0, trained = 0;
  for (const Doc& f : c.full) {
    const auto a = answers(f);
    for (auto [b, e] : a) trained += static_cast<int64_t>(e - b);
    if (static_cast<int64_t>(f.ids.size()) <= L) {
      want.push_back(f);
      continue;
    }
    size_t end = 0;
    int64_t kept_trained = 0;
    for (auto [b, e] : a)
      if (static_cast<int64_t>(e) <= L) end = e, kept_trained += static_cast<int64_t>(e - b);
    for (auto [b, e] : a) lost += static_cast<int64_t>(e - b);
    lost -= kept_trained;
    if (end == 0) {
      ++none_fits;
      continue;
    }
    want.push_back(Doc{{f.ids.begin(), f.ids.begin() + end}, {f.mask.begin(), f.mask.begin() + end}});
  }
  auto cut = run_cut(dir / "truncate", L, Overlength::Truncate);
  EXPECT_EQ(read_docs(dir / "truncate"), want);
  EXPECT_EQ(cut.overlength.over, too_long);
  EXPECT_EQ(cut.overlength.dropped, none_fits);
  EXPECT_EQ(cut.dropped["too_long"], none_fits);
  EXPECT_EQ(cut.overlength.truncated, too_long - none_fits);
  EXPECT_EQ(cut.overlength.trained, trained);
  EXPECT_EQ(cut.overlength.trained_lost, lost);
  EXPECT_GT(lost, 0);

  // window trains at least what truncate does, each extra piece opening with the head.
  auto win = run_cut(dir / "window", L, Overlength::Window);
  EXPECT_LE(win.overlength.trained_lost, cut.overlength.trained_lost);
  EXPECT_EQ(win.overlength.dropped, none_fits);
  EXPECT_EQ(win.documents, cut.documents + win.overlength.extra_pieces);
  for (const auto& d : read_docs(dir / "window")) {
    EXPECT_LE(static_cast<int64_t>(d.ids.size()), L);
    EXPECT_EQ(d.ids[0], 1);  // every piece starts at the conversation's BOS
  }
}

TEST(SftPrepare, FittedSamplesWithoutTokenizer) {
  // BOS, prompt, answer 1 (3 tokens), user turn, answer 2 (2 tokens), user turn, answer 3.
  RenderedSample s{{1, 10, 20, 21, 22, 11, 12, 30, 31, 13, 40, 41},
                   {0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1}};
  auto fit = [&](int64_t max_len, Overlength p) {
    return fitted_samples(s, fit_conversation(s.trained.data(), static_cast<int64_t>(s.ids.size()), max_len, p));
  };
  EXPECT_EQ(fit(12, Overlength::Drop).size(), 1u);
  EXPECT_EQ(fit(0, Overlength::Drop).front().ids, s.ids);
  EXPECT_TRUE(fit(11, Overlength::Drop).empty());
  EXPECT_TRUE(fit(4, Overlength::Truncate).empty());  // the first answer ends at 5
  auto t = fit(8, Overlength::Truncate);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].ids, (std::vector<int32_t>{1, 10, 20, 21, 22}));  // 7 would cut answer 2
  t = fit(9, Overlength::Truncate);
  EXPECT_EQ(t[0].ids, (std::vector<int32_t>{1, 10, 20, 21, 22, 11, 12, 30, 31}));
  // window at 8: [0,5) then head [0,5) + [5,9)? 5 + 4 = 9 > 8: answer 2 is skipped;
  // head + [9,12) = 8 fits.
  auto w = fit(8, Overlength::Window);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].ids, (std::vector<int32_t>{1, 10, 20, 21, 22, 13, 40, 41}));
  EXPECT_EQ(w[1].trained, (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 1}));  // the head is context
  auto w9 = fit(9, Overlength::Window);
  ASSERT_EQ(w9.size(), 2u);
  EXPECT_EQ(w9[1].ids, (std::vector<int32_t>{1, 10, 20, 21, 22, 13, 40, 41}));
  const auto f = fit_conversation(s.trained.data(), 12, 8, Overlength::Window);
  EXPECT_EQ(f.trained, 7);
  EXPECT_EQ(f.trained_kept, 5);
  EXPECT_EQ(f.trained_lost(), 2);
}

TEST(SftPrepare, AllMaskedDatasetIsAnErrorNamingDatasetAndTemplate) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto f = testing::write_text(dir / "masked.jsonl",
      R"({"id": "a", "conversation": [{"role": "user", "content": "hi", "loss": false}, {"role": "assistant", "content": "hello", "loss": false}]})"
      "\n"
      R"({"id": "b", "conversation": [{"role": "user", "content": "yo", "loss": false}, {"role": "assistant", "content": "hey", "loss": false}]})"
      "\n");
  for (std::string tmpl : {"llama-2-chat", "agent-flan"}) {
    auto cfg = testing::base_config(tmpl);
    cfg.datasets.push_back(testing::dataset("all_masked_set", f, dir / "out"));
    try {
      prepare_sft(cfg);
      FAIL() << "no error for an all-masked dataset";
    } catch (const Error& e) {
      std::string msg = e.what();
      // The dataset, its file and the template (issue 14: the file was missing).
      EXPECT_NE(msg.find("dataset all_masked_set (" + f.string() + "): no token is trained under chat template " + tmpl),
                std::string::npos)
          << msg;
    }
    EXPECT_FALSE(fs::exists(dir / "out" / "manifest.json"));
  }
}

TEST(SftPrepare, RenderErrorsFollowBadRecordPolicy) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  // Two leading system turns: the readers accept them, llama-2-chat folds only one.
  auto f = testing::write_text(dir / "two_systems.jsonl",
      R"({"messages": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]})"
      "\n");
  auto cfg = testing::base_config("llama-2-chat");
  cfg.datasets.push_back(testing::dataset("mid", f, dir / "out"));
  try {
    prepare_sft(cfg);
    FAIL() << "no error for a rendering the template cannot express";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset mid (" + f.string() + ") (template llama-2-chat)"), std::string::npos)
        << e.what();
  }
  cfg.datasets[0].policies.bad_record = OnProblem::Drop;
  auto r = prepare_sft(cfg).datasets.at(0);
  EXPECT_EQ(r.dropped["render_error"], 1);
  EXPECT_EQ(r.kept, 1);
}

// 60 distinct short conversations, so seeded choices are visible.
fs::path many_conversations(const fs::path& dir) {
  std::string text;
  for (int i = 0; i < 60; ++i)
    text += fmt::format(R"({{"id": "c{0}", "conversations": [{{"from": "human", "value": "Question {0}?"}}, {{"from": "gpt", "value": "Answer {0}."}}]}})", i) + "\n";
  return testing::write_text(dir / "many.jsonl", text);
}

std::string folder_bytes(const fs::path& dir) {
  std::string all;
  for (const char* f : {"shard_00000.bin", "shard_00000.idx", "shard_00000.mask", "manifest.json"})
    all += read_text_file(dir / f);
  return all;
}

TEST(SftPrepare, SampleCountsAndDeterminism) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto f = many_conversations(dir);
  auto run = [&](const std::string& out, uint64_t seed, int threads, int64_t max_samples, double upsample) {
    auto cfg = testing::base_config("llama-2-chat");
    cfg.seed = seed;
    cfg.threads = threads;
    auto d = testing::dataset("many", f, dir / out);
    d.max_samples = max_samples;
    d.upsample = upsample;
    cfg.datasets.push_back(d);
    return prepare_sft(cfg).datasets.at(0);
  };
  auto a = run("a", 7, 1, 40, 2.5);
  EXPECT_EQ(a.samples_in, 60);
  EXPECT_EQ(a.dropped["max_samples"], 20);
  EXPECT_EQ(a.kept, 40);
  EXPECT_EQ(a.documents, 100);  // 2 x 40 + round(0.5 x 40)
  auto b = run("b", 7, 2, 40, 2.5);
  EXPECT_EQ(folder_bytes(dir / "a"), folder_bytes(dir / "b"));  // same seed, other thread count
  run("c", 8, 2, 40, 2.5);
  EXPECT_NE(folder_bytes(dir / "a"), folder_bytes(dir / "c"));  // the seed picks the subsets
  auto half = run("half", 7, 2, 0, 0.5);
  EXPECT_EQ(half.kept, 60);
  EXPECT_EQ(half.documents, 30);
  auto docs = read_docs(dir / "half");
  std::sort(docs.begin(), docs.end(), [](const Doc& x, const Doc& y) { return x.ids < y.ids; });
  EXPECT_EQ(std::adjacent_find(docs.begin(), docs.end()), docs.end());  // a subset: no repeats
}

TEST(SftPrepare, RerunReplacesAnEarlierOutput) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto f = many_conversations(dir);
  auto cfg = testing::base_config("llama-2-chat");
  cfg.datasets.push_back(testing::dataset("many", f, dir / "out"));
  cfg.shard_tokens = 200;  // several shards
  prepare_sft(cfg);
  EXPECT_TRUE(fs::exists(dir / "out" / "shard_00002.mask"));
  cfg.shard_tokens = 1 << 20;
  prepare_sft(cfg);
  EXPECT_FALSE(fs::exists(dir / "out" / "shard_00002.bin"));
  EXPECT_EQ(TokenDataset::open(dir / "out").num_documents(), 60);
}

}  // namespace
}  // namespace agenttune
