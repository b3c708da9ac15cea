// prepare_corpus end to end on the real Llama-2 tokenizer: every input form gives exactly the ids
// Python sentencepiece gives ([BOS] ids [EOS] per document), in a deterministic order, whatever the
// thread count; a killed run resumes after its last complete shard.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "agenttune/util/error.h"
#include "agenttune/util/sha256.h"
#include "prepare_test_util.h"

namespace agenttune {
namespace {

using namespace testing;

const std::vector<std::string> kTexts = {
    "def add(a, b):\n    return a + b\n",
    "Hello, world! Ünïcödé 日本語 😀",
    "  leading spaces and\ttabs\r\nwindows line\n",
    "#include <cstdio>\nint main() { std::puts(\"hi\"); }\n",
    "A plain English sentence about tokenizers.",
    "{\"nested\": \"json inside text\", \"n\": [1, 2]}",
    "Привет мир. مرحبا",
    "text file one\nwith two lines\n",
    "# Markdown title\n\n* item\n",
    "compressed text file ▁ with the sp mark",
    "glob one",
    "glob two",
};

TEST(PrepareCorpus, MatchesSentencePieceAcrossFormats) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  auto in = dir / "in";
  write_plain(in / "a.jsonl", jsonl({kTexts[0], kTexts[1], kTexts[2]}));
  write_gz(in / "b.jsonl.gz", jsonl({kTexts[3], kTexts[4]}));
  write_zst(in / "c.jsonl.zst", jsonl({kTexts[5], kTexts[6]}));
  write_plain(in / "folder/a.txt", kTexts[7]);
  write_plain(in / "folder/b/c.md", kTexts[8]);
  write_zst(in / "folder/z.txt.zst", kTexts[9]);
  write_plain(in / "folder/.hidden.txt", "never read");
  write_plain(in / "folder/.git/x.txt", "never read");
  write_plain(in / "folder/image.png", "never read");
  write_plain(in / "globbed/x1.jsonl", jsonl({kTexts[10]}));
  write_gz(in / "globbed/x2.jsonl", jsonl({kTexts[11]}));  // gzip found by magic, not by name
  write_plain(in / "globbed/y.txt", "not matched by the glob");

  auto opts = options({(in / "a.jsonl").string(), (in / "b.jsonl.gz").string(), (in / "c.jsonl.zst").string(),
                       (in / "folder").string(), (in / "globbed/x*.jsonl").string()},
                      dir / "out");
  auto report = prepare_corpus(opts);
  auto expected = python_ids(kTexts, dir);
  auto data = TokenDataset::open(dir / "out", sha256_file_hex(llama_tokenizer()));
  EXPECT_EQ(all_documents(data), expected);

  const auto& m = report.manifest;
  EXPECT_EQ(m.documents, static_cast<int64_t>(kTexts.size()));
  EXPECT_EQ(m.vocab_size, 32000);
  EXPECT_EQ(m.dtype, "uint16");
  const std::vector<std::string> order = {"a.jsonl",       "b.jsonl.gz",      "c.jsonl.zst",
                                          "folder/a.txt",  "folder/b/c.md",   "folder/z.txt.zst",
                                          "globbed/x1.jsonl", "globbed/x2.jsonl"};
  const std::vector<int64_t> docs = {3, 2, 2, 1, 1, 1, 1, 1};
  ASSERT_EQ(m.sources.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& s = m.sources[i];
    EXPECT_EQ(s.path, (in / order[i]).string());
    EXPECT_EQ(s.bytes, fs::file_size(in / order[i])) << s.path;
    EXPECT_EQ(s.sha256, sha256_file_hex(in / order[i])) << s.path;
    EXPECT_EQ(s.documents, docs[i]) << s.path;
  }
  EXPECT_EQ(ShardManifest::read(dir / "out" / "manifest.json").tokens, m.tokens);
}

TEST(PrepareCorpus, ContentFieldAndNoBosEos) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  write_plain(dir / "stack.jsonl", jsonl({kTexts[0], kTexts[3]}, "content"));
  auto opts = options({(dir / "stack.jsonl").string()}, dir / "out");
  opts.text_field = "content";
  opts.add_bos = opts.add_eos = false;
  prepare_corpus(opts);
  auto expected = python_ids({kTexts[0], kTexts[3]}, dir);
  for (auto& e : expected) e = std::vector<int64_t>(e.begin() + 1, e.end() - 1);
  EXPECT_EQ(all_documents(TokenDataset::open(dir / "out")), expected);
}

std::map<std::string, std::string> folder_bytes(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename()] = read_text_file(e.path());
  return out;
}

void write_generated(const fs::path& in, size_t docs_per_file) {
  write_plain(in / "p1.jsonl", jsonl(generated_docs(docs_per_file, 1)));
  write_zst(in / "p2.jsonl.zst", jsonl(generated_docs(docs_per_file, 2)));
  write_gz(in / "p3.jsonl.gz", jsonl(generated_docs(docs_per_file, 3)));
}

TEST(PrepareCorpus, ByteIdenticalForAnyThreadCount) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  write_generated(dir / "in", 400);  // ~1.3 MB: several 256 KiB batches in flight at once
  auto one = options({(dir / "in").string()}, dir / "t1", 1);
  one.shard_tokens = 60000;
  auto four = one;
  four.threads = 4;
  four.output_dir = dir / "t4";
  auto r1 = prepare_corpus(one);
  prepare_corpus(four);
  EXPECT_GE(r1.manifest.shards.size(), 3u);
  auto a = folder_bytes(dir / "t1"), b = folder_bytes(dir / "t4");
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) EXPECT_TRUE(b.count(name) && b[name] == bytes) << name << " differs";
  // Documents never straddle shards and every shard but the last reached the size asked for.
  for (size_t i = 0; i + 1 < r1.manifest.shards.size(); ++i)
    EXPECT_GE(r1.manifest.shards[i].tokens, one.shard_tokens);
}

TEST(PrepareCorpus, KilledRunResumesAfterLastCompleteShard) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  write_generated(dir / "in", 1000);
  auto opts = options({(dir / "in").string()}, dir / "out", 1);
  opts.shard_tokens = 20000;
  auto clean = opts;
  clean.output_dir = dir / "clean";
  clean.threads = 2;
  prepare_corpus(clean);

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      prepare_corpus(opts);
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  // Kill it as soon as a shard is recorded, like a preempted job.
  const auto state = dir / "out" / "prepare_state.json";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(state) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child finished before it could be killed";
  auto saved = nlohmann::json::parse(read_text_file(state));
  ASSERT_FALSE(saved["complete"].get<bool>());
  const auto first = dir / "out" / "shard_00000.bin";
  ASSERT_TRUE(fs::exists(first));
  const auto first_time = fs::last_write_time(first);

  opts.threads = 2;
  auto report = prepare_corpus(opts);
  EXPECT_EQ(fs::last_write_time(first), first_time) << "a complete shard was rewritten";
  auto a = folder_bytes(dir / "clean"), b = folder_bytes(dir / "out");
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) EXPECT_TRUE(b.count(name) && b[name] == bytes) << name << " differs";

  // A finished folder is left alone by a rerun with the same inputs and options.
  const auto last = dir / "out" / (report.manifest.shards.back().name + ".bin");
  const auto last_time = fs::last_write_time(last);
  EXPECT_EQ(prepare_corpus(opts).manifest.tokens, report.manifest.tokens);
  EXPECT_EQ(fs::last_write_time(last), last_time);
}

}  // namespace
}  // namespace agenttune
