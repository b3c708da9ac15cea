// Bad input is refused with a message naming the file, the 0-based record and the field.
#include "readers_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::expect_contains;
using testing::write_file;

const std::string kGood =
    R"({"id":"a","conversations":[{"from":"human","loss":null,"value":"hi"},{"from":"gpt","loss":true,"value":"hello"}]})";

struct BadCase {
  const char* name;
  DatasetFormat format;
  std::string second_record;  // written after one good record, so the bad one is record 1, line 2
  std::vector<std::string> expected;
};

TEST(ReadErrors, EachBadRecordNamesFileRecordAndField) {
  const BadCase cases[] = {
      {"value_type", DatasetFormat::AgentInstruct,
       R"({"conversations":[{"from":"human","loss":null,"value":"q"},{"from":"gpt","loss":true,"value":7}]})",
       {"field 'conversations[1].value'", "expected a string, got number"}},
      {"loss_type", DatasetFormat::AgentInstruct,
       R"({"conversations":[{"from":"human","loss":"yes","value":"q"},{"from":"gpt","value":"a"}]})",
       {"field 'conversations[0].loss'", "expected true, false or null", "\"yes\""}},
      {"turns_type", DatasetFormat::AgentInstruct, R"({"conversations":"human: hi"})",
       {"field 'conversations'", "expected an array of turns, got string"}},
      {"turn_type", DatasetFormat::ShareGPT, R"({"conversations":[["human","hi"]]})",
       {"field 'conversations[0]'", "expected an object, got array"}},
      {"missing_role", DatasetFormat::ShareGPT, R"({"conversations":[{"value":"hi"}]})",
       {"field 'conversations[0].from'", "missing"}},
      {"unknown_role", DatasetFormat::AgentInstruct,
       R"({"conversations":[{"from":"human","value":"q"},{"from":"bot","value":"a"}]})",
       {"field 'conversations[1].from'", "unknown role 'bot'", "known: human, gpt, assistant, bard"}},
      {"empty_conversation", DatasetFormat::AgentInstruct, R"({"id":"e","conversations":[]})",
       {"field 'conversations'", "no turns"}},
      {"empty_content", DatasetFormat::ShareGPT,
       R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"  \n"}]})",
       {"field 'conversations[1].value'", "empty or whitespace-only content"}},
      {"not_alternating", DatasetFormat::ShareGPT,
       R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"},{"from":"gpt","value":"b"}]})",
       {"field 'conversations[2].from'", "assistant turn follows an assistant turn", "alternation policy"}},
      {"tool_first", DatasetFormat::ToolBench,
       R"({"conversations":[{"from":"system","value":"s"},{"from":"function","value":"{}"},{"from":"assistant","value":"a"}]})",
       {"field 'conversations[1].from'", "first turn after system turns is tool"}},
      {"late_system", DatasetFormat::OpenAI,
       R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"},{"role":"system","content":"s"}]})",
       {"field 'messages[2].role'", "system turns only at the start"}},
      {"no_assistant", DatasetFormat::OpenAI,
       R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}]})",
       {"field 'messages'", "no assistant turn"}},
      // A record with another schema's turn list instead is refused as a whole (test_wrong_format).
      {"missing_messages", DatasetFormat::OpenAI, R"({"turns":[]})",
       {"field 'messages': missing", "this one has: turns"}},
      {"flan_loss", DatasetFormat::AgentFlan,
       R"({"conversation":[{"role":"user","content":"q"},{"role":"assistant","content":"a","loss":"maybe"}]})",
       {"field 'conversation[1].loss'", "\"maybe\""}},
      {"weight", DatasetFormat::OpenAI,
       R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","weight":0.5}]})",
       {"field 'messages[1].weight'", "expected 0 or 1, got 0.5"}},
      {"weight_vs_loss", DatasetFormat::OpenAI,
       R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","weight":0,"loss":true}]})",
       {"field 'messages[1].weight'", "disagrees with loss true"}},
      {"tool_calls", DatasetFormat::OpenAI,
       R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[]}]})",
       {"field 'messages[1].content'", "null, and tool_calls is empty"}},
      {"id_type", DatasetFormat::ShareGPT, R"({"id":["x"],"conversations":[]})",
       {"field 'id'", "expected a string, got array"}},
      {"not_object", DatasetFormat::ShareGPT, R"("just a string")", {"expected a JSON object, got string"}},
      {"malformed", DatasetFormat::ShareGPT, R"({"conversations":[{"from":"human","value":"q"}})",
       {"malformed JSON"}},
      {"bad_utf8", DatasetFormat::ShareGPT,
       "{\"conversations\":[{\"from\":\"human\",\"value\":\"q\"},{\"from\":\"gpt\",\"value\":\"caf\xC3\x28\"}]}",
       {"field 'conversations[1].value'", "invalid UTF-8"}},
      {"surrogate_utf8", DatasetFormat::ShareGPT,
       "{\"conversations\":[{\"from\":\"human\",\"value\":\"\xED\xA0\x80\"},{\"from\":\"gpt\",\"value\":\"a\"}]}",
       {"field 'conversations[0].value'", "invalid UTF-8"}},
  };
  auto dir = testing::scratch_dir();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string good = c.format == DatasetFormat::AgentInstruct ? kGood
                       : c.format == DatasetFormat::OpenAI
                           ? R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})"
                       : c.format == DatasetFormat::ToolBench
                           ? R"({"conversations":[{"from":"user","value":"q"},{"from":"assistant","value":"a"}]})"
                       : c.format == DatasetFormat::AgentFlan
                           ? R"({"conversation":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})"
                           : R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})";
    auto path = write_file(dir, std::string(c.name) + ".jsonl", good + "\n" + c.second_record + "\n");
    auto msg = error_of(path, c.format);
    ASSERT_FALSE(msg.empty()) << "no error";
    expect_contains(msg, {path.string() + ": record 1 (line 2)"});
    for (const auto& e : c.expected) expect_contains(msg, {e});
  }
}

TEST(ReadErrors, ArrayRecordsAreNumberedAndLocated) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "arr.json",
                         "[\n " + kGood + ",\n " + kGood + ",\n {\"conversations\": [\n  {\"from\": \"human\", \"value\": 3}]}\n]\n");
  expect_contains(error_of(path, DatasetFormat::Auto),
                  {path.string() + ": record 2 (line 4): field 'conversations[0].value'", "got number"});
}

TEST(ReadErrors, BrokenFilesAreRefusedAsAWhole) {
  auto dir = testing::scratch_dir();
  auto f = DatasetFormat::AgentInstruct;
  expect_contains(error_of(write_file(dir, "trailing.json", "[" + kGood + ",\n]"), f), {"trailing.json: line 2: trailing comma after record 0"});
  expect_contains(error_of(write_file(dir, "cut.json", "[" + kGood + ", {\"conversations\": [\"x"), f),
                  {"cut.json: record 1 is cut off"});
  expect_contains(error_of(write_file(dir, "open.json", "[" + kGood), f), {"not closed"});
  expect_contains(error_of(write_file(dir, "junk.json", "[" + kGood + "] x"), f), {"unexpected text after the JSON array"});
  expect_contains(error_of(write_file(dir, "text.txt", "hello"), f),
                  {"text.txt: line 1: expected a JSON array ('[') or JSON Lines objects ('{'), found byte 0x68"});
  expect_contains(error_of(write_file(dir, "gz.jsonl.gz", "\x1f\x8b\x08"), f), {"gzip?"});
  expect_contains(error_of(write_file(dir, "empty.jsonl", ""), f), {"empty.jsonl: empty file"});
  expect_contains(error_of(write_file(dir, "none.json", " [ ] "), f), {"none.json: no records"});
  expect_contains(error_of(dir / "absent.jsonl", f), {"absent.jsonl: not found"});
  expect_contains(error_of(write_file(dir, "pretty.json", "{\n  \"conversations\": []\n}\n"), f),
                  {"pretty.json: record 0 (line 1): malformed JSON", "one whole record per line"});
  expect_contains(error_of(write_file(dir, "mystery.jsonl", R"({"text":"hi"})"), DatasetFormat::Auto),
                  {"mystery.jsonl: record 0 (line 1): cannot tell the format", "set the dataset's format"});
}

TEST(ReadErrors, ParquetIsRefusedWithAConversionCommand) {
  auto dir = testing::scratch_dir();
  auto by_magic = write_file(dir, "train-00000", std::string("PAR1\x15\x04", 6));
  auto by_ext = write_file(dir, "os.parquet", "whatever");
  for (const auto& p : {by_magic, by_ext}) {
    auto msg = error_of(p, DatasetFormat::Auto);
    expect_contains(msg, {p.string() + ": Parquet is not read here", "pd.read_parquet('" + p.string() + "')",
                          ".to_json(", "orient='records', lines=True"});
  }
  // A folder of parquet files is refused too, not skipped.
  auto sub = dir / "split";
  std::filesystem::create_directories(sub);
  write_file(sub, "db.parquet", "PAR1");
  expect_contains(error_of(sub, DatasetFormat::Auto), {"db.parquet: Parquet is not read here"});
}

TEST(ReadErrors, FormatNamesParseWithSuggestions) {
  EXPECT_EQ(parse_format("toolbench"), DatasetFormat::ToolBench);
  EXPECT_EQ(parse_format("auto"), DatasetFormat::Auto);
  try {
    parse_format("sharegtp");
    FAIL() << "no error";
  } catch (const Error& e) {
    expect_contains(e.what(), {"unknown dataset format 'sharegtp'", "did you mean 'sharegpt'", "agentflan"});
  }
}

}  // namespace
}  // namespace agenttune
