// Bad input to prepare: by default the first bad record stops the run with FILE:LINE and the field;
// with OnError::Skip bad records are counted and a few kept as examples; empty documents are
// counted and never stored.
#include "agenttune/util/error.h"
#include "prepare_test_util.h"

namespace agenttune {
namespace {

using namespace testing;

std::string prepare_error(const PrepareOptions& opts) {
  try {
    prepare_corpus(opts);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(PrepareErrors, BadRecordNamesFileLineAndField) {
  REQUIRE_TOKENIZER();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"text": "ab")", ":2: malformed JSON"},
      {R"({"body": "x"})", ":2: field 'text': missing"},
      {R"({"text": 5})", ":2: field 'text': not a string"},
      {"{\"text\": \"a\xff" "b\"}", ":2: field 'text': invalid UTF-8 at byte 11"},
      {"{\"id\": \"\xc3\x28\", \"text\": \"ok\"}", ":2: field 'id': invalid UTF-8 at byte 8"},
      {R"([1, 2])", ":2: not a JSON object"},
  };
  auto dir = scratch_dir();
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto file = dir / ("bad" + std::to_string(i) + ".jsonl");
    write_plain(file, R"({"text": "fine"})" "\n" + cases[i].first + "\n" R"({"text": "after"})" "\n");
    const std::string msg = prepare_error(options({file.string()}, dir / "out"));
    EXPECT_NE(msg.find(file.string() + cases[i].second), std::string::npos)
        << "got: " << msg << "\nwanted: " << file.string() + cases[i].second;
  }
  write_plain(dir / "doc.txt", "abc\xe2\x82");
  EXPECT_NE(prepare_error(options({(dir / "doc.txt").string()}, dir / "out")).find("doc.txt: invalid UTF-8 at byte 3"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "out" / "manifest.json"));
}

TEST(PrepareErrors, SkipCountsBadRecordsAndKeepsFiveExamples) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  const std::string lines = R"({"text": "good one"})" "\n"
                            R"({"text": 1})" "\n"
                            R"({"text": "")" "\n"
                            "\n"  // a blank line is not a record
                            R"({"text": ""})" "\n"
                            R"({"other": "x"})" "\n"
                            R"({"text": null})" "\n"
                            R"({"text": "   \n\t"})" "\n"
                            R"(not json)" "\n"
                            R"({"text": [1]})" "\n"
                            R"({"text": "good two"})";  // no final newline
  write_plain(dir / "mixed.jsonl", lines);
  write_plain(dir / "empty.txt", "");
  auto opts = options({(dir / "mixed.jsonl").string(), (dir / "empty.txt").string()}, dir / "out");
  EXPECT_NE(prepare_error(opts).find("mixed.jsonl:2: field 'text': not a string"), std::string::npos);

  opts.on_error = OnError::Skip;
  auto report = prepare_corpus(opts);
  EXPECT_EQ(report.bad_records, 6);
  ASSERT_EQ(report.first_errors.size(), 5u);
  EXPECT_NE(report.first_errors[0].find("mixed.jsonl:2:"), std::string::npos) << report.first_errors[0];
  EXPECT_NE(report.first_errors[1].find("mixed.jsonl:3: malformed JSON"), std::string::npos)
      << report.first_errors[1];
  EXPECT_EQ(report.empty_documents, 3);  // "", whitespace only, the empty file
  EXPECT_EQ(report.manifest.documents, 2);
  ASSERT_EQ(report.manifest.sources.size(), 2u);
  EXPECT_EQ(report.manifest.sources[0].skipped, 8);
  EXPECT_EQ(report.manifest.sources[1].skipped, 1);
  auto docs = all_documents(TokenDataset::open(dir / "out"));
  EXPECT_EQ(docs, python_ids({"good one", "good two"}, dir));
}

TEST(PrepareErrors, CorruptOrMissingInputNamesTheFile) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  write_gz(dir / "whole.jsonl.gz", jsonl(generated_docs(200, 7)));
  std::string gz = read_text_file(dir / "whole.jsonl.gz");
  write_plain(dir / "cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  std::string msg = prepare_error(options({(dir / "cut.jsonl.gz").string()}, dir / "out"));
  EXPECT_NE(msg.find("cut.jsonl.gz: truncated gzip"), std::string::npos) << msg;

  write_zst(dir / "whole.jsonl.zst", jsonl(generated_docs(200, 7)));
  std::string zst = read_text_file(dir / "whole.jsonl.zst");
  zst[zst.size() / 2] ^= 0x55;
  write_plain(dir / "bad.jsonl.zst", zst);
  msg = prepare_error(options({(dir / "bad.jsonl.zst").string()}, dir / "out"));
  EXPECT_NE(msg.find("bad.jsonl.zst: "), std::string::npos) << msg;

  msg = prepare_error(options({(dir / "nope.jsonl").string()}, dir / "out"));
  EXPECT_NE(msg.find("nope.jsonl: not found"), std::string::npos) << msg;
  msg = prepare_error(options({(dir / "*.parquet").string()}, dir / "out"));
  EXPECT_NE(msg.find("*.parquet: no input files found"), std::string::npos) << msg;
}

// An empty corpus fails at prepare, naming it and its inputs, and leaves no manifest a trainer
// could open (before issue 14 it was written and training failed much later).
TEST(PrepareErrors, ACorpusWithoutADocumentIsAnErrorNamingIt) {
  REQUIRE_TOKENIZER();
  auto dir = scratch_dir();
  write_plain(dir / "blank.jsonl", R"({"text": ""})" "\n" R"({"text": "  "})" "\n");
  write_plain(dir / "empty.txt", "");
  auto opts = options({(dir / "blank.jsonl").string(), (dir / "empty.txt").string()}, dir / "out");
  opts.name = "prose";
  const std::string msg = prepare_error(opts);
  EXPECT_NE(msg.find("corpus 'prose': no document to write to " + (dir / "out").string() + ": its 2 input file(s) (" +
                     (dir / "blank.jsonl").string() + ", " + (dir / "empty.txt").string() +
                     ") hold 3 empty and 0 skipped bad record(s) and nothing else"),
            std::string::npos)
      << msg;
  EXPECT_FALSE(fs::exists(dir / "out" / "manifest.json"));
}

}  // namespace
}  // namespace agenttune
