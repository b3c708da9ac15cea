// llama-3 and qwen2.5 against transformers' apply_chat_template with each model's own published
// template (tests/chat/fixtures/*.jinja) and real tokenizer.json (.deps/tokenizers, the
// bpe_tokenizers fixture), through tests/chat/py/bpe_chat_oracle.py:
// - render_text() and our jinja() rendering equal the published template's text;
// - ids equal apply_chat_template(tokenize=True), except where content spells an added token (there
//   ours keep it text: they equal the oracle's tokenization with control tokens only where the
//   template wrote them, and differ from transformers, which matches them anywhere);
// - the mask equals the tokens overlapping our jinja()'s {% generation %} spans (tokenizers' offsets;
//   the published templates mark no spans, so this mask oracle is our own Jinja, made sound by its
//   text being equal to the published template's);
// - generation prompts equal add_generation_prompt=True.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>

#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"
#include "agenttune/util/error.h"
#include "bpe_chat_oracle.h"
#include "chat_cases.h"
#include "qwen_cases.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using nlohmann::json;

// Conversations beyond the shared ones: long and multi-turn, tool results (single, consecutive,
// first), JSON escapes in tool output, tool calls written as each family writes them, CJK and
// emoji, whitespace runs, CRLF, digits, empty and untrained turns, a system turn mid-conversation.
std::vector<testing::ChatCase> bpe_cases() {
  using R = Role;
  using testing::turn;
  auto conv = [](std::string id, std::vector<Turn> t) {
    Conversation c;
    c.id = id;
    c.source = "test";
    c.turns = std::move(t);
    return testing::ChatCase{id, c};
  };
  std::vector<testing::ChatCase> out = testing::chat_cases();
  std::vector<Turn> long_turns = {turn(R::System, "You are a careful planner.")};
  for (int i = 0; i < 12; ++i) {
    std::string u = "Step " + std::to_string(i) + ": ";
    for (int k = 0; k < 20; ++k) u += "lorem ipsum dolor " + std::to_string(k * i) + ", ";
    long_turns.push_back(turn(R::User, u));
    long_turns.push_back(turn(R::Assistant, "Done with step " + std::to_string(i) + ".\n- ok\n- next", i % 3 != 1));
  }
  out.push_back(conv("long", long_turns));
  out.push_back(conv("llama_tool_call", {
      turn(R::System, "Environment: tools"),
      turn(R::User, "Weather in Paris?"),
      turn(R::Assistant, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"),
      turn(R::Tool, "{\"temp_c\": 21, \"sky\": \"clear\"}"),
      turn(R::Assistant, "It is 21 °C and clear in Paris.")}));
  out.push_back(conv("qwen_tool_call", {
      turn(R::User, "Weather in Paris and Rome?"),
      turn(R::Assistant, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
      turn(R::Tool, "{\"temp_c\": 21}"),
      turn(R::Tool, "{\"temp_c\": 25}"),
      turn(R::Assistant, "Paris 21 °C, Rome 25 °C.")}));
  out.push_back(conv("tool_first", {turn(R::Tool, "boot log: ok"), turn(R::User, "Status?"), turn(R::Assistant, "All good.")}));
  out.push_back(conv("tool_escapes", {
      turn(R::User, "Run it."),
      turn(R::Assistant, "Running."),
      turn(R::Tool, "tab\there \"quoted\" back\\slash\nnew line \x01\x1f ctrl / slash \u00e9 \u2028 😀\r\n"),
      turn(R::Assistant, "Output read.")}));
  out.push_back(conv("cjk_emoji", {
      turn(R::User, "用中文回答：今天天气怎么样？ 日本語もOK。 한국어도요."),
      turn(R::Assistant, "今天晴朗 ☀️，气温 21°C。👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵")}));
  out.push_back(conv("whitespace_runs", {
      turn(R::User, "a    b\t\t c\n\n\n d   "),
      turn(R::Assistant, "x  \n\n   y\t\tz     ")}));
  out.push_back(conv("crlf_digits", {
      turn(R::User, "line1\r\nline2\r\n12345678 3.14159 1e-9 0x7fff"),
      turn(R::Assistant, "Sum: 1234567 + 89 = 1234656\r\n")}));
  out.push_back(conv("empty_assistant", {turn(R::User, "Say nothing."), turn(R::Assistant, ""), turn(R::User, "Now say hi."),
                                         turn(R::Assistant, "hi")}));
  out.push_back(conv("mid_system", {
      turn(R::User, "Hello."), turn(R::Assistant, "Hi."), turn(R::System, "From now on answer in French."),
      turn(R::User, "How are you?"), turn(R::Assistant, "Très bien.")}));
  out.push_back(conv("loss_mixed", {
      turn(R::User, "Q1"), turn(R::Assistant, "A1", false), turn(R::User, "Q2"), turn(R::Assistant, "A2", true),
      turn(R::User, "Q3"), turn(R::Assistant, "A3")}));
  out.push_back(conv("edge_punct", {
      turn(R::System, "  \n"), turn(R::User, "!!!???"), turn(R::Assistant, "'s 're ... --- ```"), turn(R::User, "'ll")}));
  out.push_back(conv("markup", {
      turn(R::User, "<b>bold</b> <tool_response> </tools> <|fake|> <|eot_id"),
      turn(R::Assistant, "<think>\nplan\n</think>\n\nanswer <|python_tag|>x")}));
  out.push_back(conv("single_pair", {turn(R::User, "ping"), turn(R::Assistant, "pong")}));
  out.push_back(conv("three_pairs", {
      turn(R::User, "One?"), turn(R::Assistant, "1"), turn(R::User, "Two?"), turn(R::Assistant, "2"),
      turn(R::User, "Three?"), turn(R::Assistant, "3")}));
  out.push_back(conv("json_answer", {
      turn(R::System, "Answer in JSON."), turn(R::User, "List two colors."),
      turn(R::Assistant, "{\n  \"colors\": [\"red\", \"blue\"],\n  \"count\": 2\n}")}));
  out.push_back(conv("math", {
      turn(R::User, "Solve $x^2 - 5x + 6 = 0$."),
      turn(R::Assistant, "$(x-2)(x-3)=0$, so $x \\in \\{2, 3\\}$; check: 4 − 10 + 6 = 0 ✓")}));
  return out;
}

// Conversations with tool definitions (Conversation::tools), structured calls and results, the way
// Llama-3.1's published template renders them: tools in the first user message, one call per
// assistant turn, results as ipython turns. Arguments exercise Python's json.dumps: nesting, key
// order, floats at repr()'s switch points, escapes, non-ASCII, empty objects.
std::vector<testing::ChatCase> llama3_tool_cases() {
  using R = Role;
  using testing::turn;
  const ToolSpec weather{"get_weather", R"({"type": "function", "function": {"name": "get_weather", "description": )"
                                        R"("Get the current weather in a city.", "parameters": {"type": "object", "properties": )"
                                        R"({"city": {"type": "string", "description": "City name, e.g. Paris"}, "unit": )"
                                        R"({"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}})"};
  const ToolSpec flights{"search_flights", R"({"function": {"name": "search_flights", "parameters": {"properties": )"
                                           R"({"from": {"type": "string"}, "to": {"type": "string"}, "max_price": )"
                                           R"({"type": "number", "minimum": 0.5}, "passengers": {"type": "integer", "default": 1}}, )"
                                           R"("type": "object", "required": ["from", "to"]}, "description": "Find flights."}, "type": "function"})"};
  const ToolSpec calc{"calculate", R"({"type": "function", "function": {"name": "calculate", "description": "Evaluate )"
                                   R"(an arithmetic expression like 2*(3+4) < 100 \"exactly\"\n(no variables).", )"
                                   R"("parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}})"};
  const ToolSpec now{"now", R"({"type": "function", "function": {"name": "now", "description": "", "parameters": )"
                            R"({"type": "object", "properties": {}}}})"};
  const ToolSpec translate{"翻译", R"({"type": "function", "function": {"name": "翻译", "description": "把文本翻译成目标语言 🌍", )"
                                  R"("parameters": {"type": "object", "properties": {"text": {"type": "string"}, "目标": )"
                                  R"({"type": "string"}}, "required": []}}})"};
  const ToolSpec tweets{"get_user_tweets_for_twitter",
                        R"({"type": "function", "function": {"name": "get_user_tweets_for_twitter", "description": "This is )"
                        R"(the subfunction for tool \"twitter\", you can use this tool. The description of this function is: )"
                        R"(\"Get a user's tweets by id\"", "parameters": {"type": "object", "properties": {"user_id": {"type": )"
                        R"("string", "description": "", "example_value": "44196397"}, "count": {"type": "integer", "example_value": 20}}, )"
                        R"("required": ["user_id"], "optional": ["count"]}}})"};
  const ToolSpec finish{"Finish", R"({"type": "function", "function": {"name": "Finish", "description": "Give the final )"
                                  R"(answer or give up.", "parameters": {"type": "object", "properties": {"return_type": )"
                                  R"({"type": "string", "enum": ["give_answer", "give_up_and_restart"]}, "final_answer": )"
                                  R"({"type": "string"}}, "required": ["return_type"]}}})"};
  auto call = [](std::string name, std::string args, std::optional<bool> loss = std::nullopt, std::string id = "") {
    Turn t = turn(R::Assistant, "", loss);
    t.tool_calls.push_back(ToolCall{std::move(name), std::move(args), std::move(id)});
    return t;
  };
  auto result = [](std::string content, std::string name = "") {
    Turn t = turn(R::Tool, std::move(content));
    t.name = std::move(name);
    return t;
  };
  auto conv = [](std::string id, std::vector<ToolSpec> tools, std::vector<Turn> t) {
    Conversation c;
    c.id = id;
    c.source = "test";
    c.tools = std::move(tools);
    c.turns = std::move(t);
    return testing::ChatCase{id, c};
  };
  std::vector<testing::ChatCase> out;
  out.push_back(conv("tools_weather", {weather}, {
      turn(R::System, "You are a weather bot."), turn(R::User, "Weather in Paris?"),
      call("get_weather", R"({"city": "Paris", "unit": "celsius"})"), result(R"({"temp_c": 21, "sky": "clear"})"),
      turn(R::Assistant, "It is 21 °C and clear in Paris.")}));
  out.push_back(conv("tools_no_system", {weather, calc}, {
      turn(R::User, "What is 17*23?"), call("calculate", R"({"expression": "17*23"})"), result("391"),
      turn(R::Assistant, "17 × 23 = 391.")}));
  out.push_back(conv("tools_multi_turn", {weather, flights}, {
      turn(R::System, "Travel agent."), turn(R::User, "Is it warm in Rome?"),
      call("get_weather", R"({"city": "Rome"})"), result(R"({"temp_c": 25})"), turn(R::Assistant, "Yes, 25 °C."),
      turn(R::User, "Then find me a flight from Oslo, under 300."),
      call("search_flights", R"({"from": "OSL", "to": "FCO", "max_price": 300.0, "passengers": 1})"),
      result(R"([{"flight": "SK4711", "price": 289.5}])"), turn(R::Assistant, "SK4711 at 289.50.")}));
  out.push_back(conv("tools_call_last", {flights}, {
      turn(R::User, "Flights Berlin to Madrid?"), call("search_flights", R"({"to": "MAD", "from": "BER"})")}));
  out.push_back(conv("tools_numbers", {flights}, {
      turn(R::User, "Edge numbers."),
      call("search_flights", R"({"from": "A", "to": "B", "max_price": 1e-9, "passengers": 12345678901234, "x": [0.0001, )"
                             R"(0.00001, 1e15, 1e16, 123456789012345680000.0, -0.0, 2.50, 3.14159, 1E3, -7, true, false, null]})"),
      result("no flights"), turn(R::Assistant, "None found.")}));
  out.push_back(conv("tools_escapes", {translate}, {
      turn(R::User, "翻译一下"),
      call("翻译", "{\"text\": \"Zürich \\\"quoted\\\" back\\\\slash\\nline\\ttab \\u0001 \\u00e9 😀 \\u2028\", \"目标\": \"日本語\"}"),
      result("チューリッヒ"), turn(R::Assistant, "チューリッヒ です。")}));
  out.push_back(conv("tools_empty_args", {now}, {
      turn(R::User, "Time?"), call("now", "{}"), result("2026-12-06T14:00:00Z"), turn(R::Assistant, "It is 14:00 UTC.")}));
  out.push_back(conv("tools_nested_args", {calc, now}, {
      turn(R::User, "Nested."),
      call("calculate", R"({"expression": "x", "context": {"vars": {"x": [1, 2, {"y": []}]}, "opts": {}}, "z": {"b": 1, "a": 2}})"),
      result(R"({"value": 3})"), turn(R::Assistant, "3.")}));
  out.push_back(conv("tools_untrained_call", {weather}, {
      turn(R::User, "Weather in Lima?"), call("get_weather", R"({"city": "Lima"})", false), result("{\"temp_c\": 18}"),
      turn(R::Assistant, "18 °C in Lima.", true)}));
  out.push_back(conv("tools_untrained_answer", {weather}, {
      turn(R::User, "Weather in Quito?"), call("get_weather", R"({"city": "Quito"})", true), result("cloudy"),
      turn(R::Assistant, "Cloudy.", false)}));
  out.push_back(conv("tools_key_order", {flights, weather}, {
      turn(R::User, "Order matters."), call("search_flights", R"({"to": "Z", "from": "A", "passengers": 2})"),
      result("ok"), turn(R::Assistant, "Done.")}));
  out.push_back(conv("tools_edge_space", {calc}, {
      turn(R::System, "  Calculator.  \n"), turn(R::User, "\n  2+2?  \t"), call("calculate", R"({"expression": "2+2"})"),
      result("  4  "), turn(R::Assistant, "  4 \n")}));
  out.push_back(conv("tools_empty_user", {now}, {turn(R::User, ""), call("now", "{}"), result("noon"), turn(R::Assistant, "Noon.")}));
  out.push_back(conv("tools_mid_system", {weather}, {
      turn(R::User, "Weather in Cairo?"), call("get_weather", R"({"city": "Cairo"})"), result("hot"),
      turn(R::System, "Answer in one word."), turn(R::User, "Summary?"), turn(R::Assistant, "Hot.")}));
  out.push_back(conv("tools_two_calls", {weather}, {
      turn(R::User, "Paris and Rome?"), call("get_weather", R"({"city": "Paris"})"), result("21"),
      call("get_weather", R"({"city": "Rome"})"), result("25"), turn(R::Assistant, "Paris 21, Rome 25.")}));
  out.push_back(conv("tools_no_call", {weather, calc}, {
      turn(R::User, "Hi, who are you?"), turn(R::Assistant, "An assistant with a weather and a calculator tool."),
      turn(R::User, "Thanks."), turn(R::Assistant, "You're welcome.")}));
  out.push_back(conv("toolbench_finish", {tweets, finish}, {
      turn(R::System, "You are AutoGPT, you can use many tools (functions) to do the following task."),
      turn(R::User, "Get Elon's latest 2 tweets.\nBegin!"),
      call("get_user_tweets_for_twitter", R"({"user_id": "44196397", "count": 2})", std::nullopt, "call_1"),
      result(R"({"error": "", "response": "[{'text': 'hello'}, {'text': 'world'}]"})", "get_user_tweets_for_twitter"),
      call("Finish", R"({"return_type": "give_answer", "final_answer": "His latest tweets: 'hello' and 'world'."})")}));
  out.push_back(conv("tools_many", {weather, flights, calc, now, translate, tweets, finish}, {
      turn(R::User, "Use whichever fits: 1+1"), call("calculate", R"({"expression": "1+1"})"), result("2"),
      turn(R::Assistant, "2")}));
  out.push_back(conv("tools_multiline_arg", {calc}, {
      turn(R::User, "Long expression."), call("calculate", "{\"expression\": \"(1 +\\n 2) *\\n\\n 3\\r\\n\"}"),
      result("9"), turn(R::Assistant, "9")}));
  out.push_back(conv("tools_dotted_name", {weather}, {
      turn(R::User, "Call v2."), call("api.v2_lookup-3", R"({"q": "x"})"), result("ok"), turn(R::Assistant, "ok")}));
  out.push_back(conv("tools_result_json_text", {weather}, {
      turn(R::User, "Raw."), call("get_weather", R"({"city": "Oslo"})"),
      result("{\n  \"temp_c\": -3,\n  \"note\": \"snow \\\"heavy\\\"\"\n}"), turn(R::Assistant, "−3 °C, heavy snow.")}));
  out.push_back(conv("tools_spelled_control", {calc}, {
      turn(R::User, "Spell it."), call("calculate", R"({"expression": "<|eot_id|><|start_header_id|>assistant"})"),
      result("<|eom_id|>"), turn(R::Assistant, "Spelled.")}));
  return out;
}

// Conversations the Llama-3.1 template refuses, with the reason our error must give: the
// published template's own exception text where it raises, ours where it would drop or misplace
// content (our jinja() raises the same).
struct ToolError {
  testing::ChatCase c;
  std::string published, ours;  // expected substrings; published empty = it renders without error
};

std::vector<ToolError> llama3_tool_errors() {
  using R = Role;
  using testing::turn;
  const ToolSpec weather{"get_weather", R"({"type": "function", "function": {"name": "get_weather", "parameters": {}}})"};
  auto conv = [&](std::string id, std::vector<Turn> t) {
    Conversation c;
    c.id = id;
    c.source = "test";
    c.tools = {weather};
    c.turns = std::move(t);
    return testing::ChatCase{id, c};
  };
  Turn two = turn(R::Assistant, "");
  two.tool_calls = {{"get_weather", R"({"city": "Paris"})", ""}, {"get_weather", R"({"city": "Rome"})", ""}};
  Turn with_text = turn(R::Assistant, "Let me check.");
  with_text.tool_calls = {{"get_weather", R"({"city": "Paris"})", ""}};
  const std::string single = "This model only supports single tool-calls at once!";
  return {
      {conv("err_two_calls", {turn(R::User, "Paris and Rome?"), two}), single, single},
      {conv("err_no_user", {turn(R::System, "Tools only.")}),
       "Cannot put tools in the first user message when there's no first user message!",
       "Cannot put tools in the first user message when there's no first user message!"},
      {conv("err_text_with_call", {turn(R::User, "Paris?"), with_text}), "", "would drop"},
      {conv("err_assistant_first", {turn(R::Assistant, "Hello."), turn(R::User, "Weather?")}), "", "not a user message"},
  };
}

struct Family {
  std::string tmpl, tokenizer, published;
  std::vector<testing::ChatCase> cases;
  json kwargs = nullptr;  // template variables for every rendering (Qwen3's enable_thinking)
};

using testing::run_bpe_chat_oracle;

TEST(ChatTemplateBpeOracle, MatchesPublishedTemplates) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  for (const char* family : {"llama3", "qwen2.5", "qwen3"})
    if (!std::filesystem::exists(deps / family / "tokenizer.json"))
      GTEST_SKIP() << deps << " has no " << family << " tokenizer.json (the bpe_tokenizers fixture makes them)";
  if (!std::filesystem::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";
  const auto fixtures = testing::source_dir() / "tests/chat/fixtures";
  auto joined = [](std::vector<std::vector<testing::ChatCase>> lists) {
    std::vector<testing::ChatCase> all;
    for (auto& l : lists) all.insert(all.end(), l.begin(), l.end());
    return all;
  };
  const auto qwen = joined({bpe_cases(), llama3_tool_cases(), testing::qwen_tool_cases()});
  const auto qwen3 = joined({qwen, testing::qwen3_think_cases()});
  const auto qwen3_jinja = (fixtures / "qwen3.jinja").string();
  const std::vector<Family> families = {
      {"llama-3", (deps / "llama3").string(), (fixtures / "llama-3.1-instruct.jinja").string(),
       joined({bpe_cases(), llama3_tool_cases()})},
      {"qwen2.5", (deps / "qwen2.5").string(), (fixtures / "qwen2.5-instruct.jinja").string(), qwen},
      {"qwen3", (deps / "qwen3").string(), qwen3_jinja, qwen3},
      {"qwen3-no-think", (deps / "qwen3").string(), qwen3_jinja, qwen3, json{{"enable_thinking", false}}}};
  struct Row {
    std::string tmpl, name;
    bool tools;  // offers tool definitions
    RenderedSample ours;
    std::string text, gen_text;
    std::vector<int32_t> gen_ids;
  };
  std::vector<Row> rows;
  json cases = json::array();
  for (const auto& f : families) {
    auto tmpl = make_template(f.tmpl);
    const Tokenizer tok = Tokenizer::load(f.tokenizer);
    for (const auto& c : f.cases) {
      auto prompt = testing::before_last_assistant(c.conv);
      const bool tools = !c.conv.tools.empty();
      rows.push_back({f.tmpl, c.name, tools, tmpl->render(c.conv, tok), tmpl->render_text(c.conv),
                      tmpl->generation_prompt(prompt), tmpl->generation_prompt_ids(prompt, tok)});
      cases.push_back({{"tokenizer", f.tokenizer}, {"published", f.published}, {"jinja", tmpl->jinja()},
                       {"tools", testing::tools_json(c.conv)}, {"messages", testing::messages_json(c.conv)},
                       {"gen_messages", testing::messages_json(prompt)}, {"kwargs", f.kwargs}});
    }
  }
  const json out = run_bpe_chat_oracle(cases);
  ASSERT_EQ(out["cases"].size(), rows.size());

  std::map<std::string, int> exact, exact_tools, trained, spelled;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const json& o = out["cases"][i];
    const auto tag = row.tmpl + "/" + row.name;
    EXPECT_EQ(row.text, o["text"].get<std::string>()) << tag;
    EXPECT_EQ(o["ours_text"].get<std::string>(), o["text"].get<std::string>()) << tag << ": jinja() vs published";
    EXPECT_EQ(row.gen_text, o["gen_text"].get<std::string>()) << tag << " generation prompt";
    if (o["ids"].is_null()) {
      // Content spells a marker the published template reads (a whole "<tool_response>...</tool_response>"
      // user turn, which Qwen3 does not count as a query): the oracle has no rule-applied ids, only texts.
      EXPECT_TRUE(o["spells_added"].get<bool>()) << tag;
      EXPECT_NE(row.ours.ids, o["hf_ids"].get<std::vector<int32_t>>()) << tag;
      ++spelled[row.tmpl];
      continue;
    }
    EXPECT_EQ(row.ours.ids, o["ids"].get<std::vector<int32_t>>()) << tag;
    EXPECT_EQ(row.ours.trained, o["mask"].get<std::vector<uint8_t>>()) << tag;
    EXPECT_EQ(row.gen_ids, o["gen_ids"].get<std::vector<int32_t>>()) << tag << " generation prompt";
    if (o["spells_added"].get<bool>()) {
      // transformers turns the spelled control tokens into real ones; we keep them text.
      EXPECT_NE(row.ours.ids, o["hf_ids"].get<std::vector<int32_t>>()) << tag;
      ++spelled[row.tmpl];
    } else {
      EXPECT_EQ(row.ours.ids, o["hf_ids"].get<std::vector<int32_t>>()) << tag;
      EXPECT_EQ(row.gen_ids, o["hf_gen_ids"].get<std::vector<int32_t>>()) << tag << " generation prompt";
      ++exact[row.tmpl];
      exact_tools[row.tmpl] += row.tools;
    }
    trained[row.tmpl] += static_cast<int>(row.ours.num_trained());
  }
  for (const auto& f : families) {
    // At least 20 conversations equal to apply_chat_template id for id, and masks that train something.
    EXPECT_GE(exact[f.tmpl], 20) << f.tmpl;
    EXPECT_GT(trained[f.tmpl], 100) << f.tmpl;
    EXPECT_GE(exact_tools[f.tmpl], 20) << f.tmpl << ": conversations with tools";
    std::cout << f.tmpl << ": " << exact[f.tmpl] << " conversations equal to apply_chat_template (" << exact_tools[f.tmpl]
              << " with tools), " << spelled[f.tmpl]
              << " spelling control tokens (kept text), " << trained[f.tmpl] << " trained tokens\n";
  }
}

// Where Llama-3.1's published template raises (two calls in one message, tools and no user message)
// ours raise with its words; where it would silently drop or misplace content (text next to a call,
// which it drops; an assistant message first, which it renders as the user's) ours refuse. The
// C++ rendering and our jinja() (run by transformers) agree.
TEST(ChatTemplateBpeOracle, Llama3ToolErrorsMirrorThePublishedTemplate) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json"))
    GTEST_SKIP() << deps << " has no Llama-3 tokenizer.json (the bpe_tokenizers fixture makes it)";
  if (!std::filesystem::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";
  const auto tmpl = make_template("llama-3");
  const auto errors = llama3_tool_errors();
  json cases = json::array();
  for (const auto& e : errors) {
    try {
      tmpl->render_text(e.c.conv);
      ADD_FAILURE() << e.c.name << " rendered";
    } catch (const Error& err) {
      const std::string msg = err.what();
      EXPECT_NE(msg.find(e.ours), std::string::npos) << msg;
      EXPECT_NE(msg.find("(id " + e.c.name + ")"), std::string::npos) << msg;
      EXPECT_NE(msg.find("llama-3"), std::string::npos) << msg;
    }
    const auto messages = testing::messages_json(e.c.conv);
    cases.push_back({{"tokenizer", (deps / "llama3").string()},
                     {"published", (testing::source_dir() / "tests/chat/fixtures/llama-3.1-instruct.jinja").string()},
                     {"jinja", tmpl->jinja()}, {"tools", testing::tools_json(e.c.conv)}, {"messages", messages},
                     {"gen_messages", messages}, {"expect_error", true}});
  }
  const json out = run_bpe_chat_oracle(cases);
  ASSERT_EQ(out["cases"].size(), errors.size());
  for (size_t i = 0; i < errors.size(); ++i) {
    const json& o = out["cases"][i];
    const auto& e = errors[i];
    if (e.published.empty()) {
      EXPECT_TRUE(o["error"].is_null()) << e.c.name << ": the published template renders it";
    } else {
      ASSERT_TRUE(o["error"].is_string()) << e.c.name;
      EXPECT_NE(o["error"].get<std::string>().find(e.published), std::string::npos) << o["error"];
    }
    ASSERT_TRUE(o["ours_error"].is_string()) << e.c.name << ": our jinja() rendered it";
    EXPECT_NE(o["ours_error"].get<std::string>().find(e.ours), std::string::npos) << o["ours_error"];
  }
}

// The stop ids are the family's end-of-turn tokens; a tokenizer without them is an error naming it.
TEST(ChatTemplateBpeOracle, StopIdsAndWrongTokenizer) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json") || !std::filesystem::exists(deps / "qwen2.5/tokenizer.json"))
    GTEST_SKIP() << deps << " has no Llama-3/Qwen2.5 tokenizer.json (the bpe_tokenizers fixture makes them)";
  const Tokenizer llama = Tokenizer::load(deps / "llama3"), qwen = Tokenizer::load(deps / "qwen2.5");
  EXPECT_EQ(make_template("llama-3")->stop_ids(llama),
            (std::vector<int32_t>{*llama.piece_to_id("<|eot_id|>"), *llama.piece_to_id("<|eom_id|>")}));
  EXPECT_EQ(make_template("qwen2.5")->stop_ids(qwen), std::vector<int32_t>{*qwen.piece_to_id("<|im_end|>")});
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  try {
    make_template("qwen2.5")->render(c, llama);
    FAIL() << "qwen2.5 rendered with Llama-3's tokenizer";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("<|im_start|>"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_template("llama-3")->stop_ids(qwen), std::exception);
}

// A template paired with the other family's tokenizer is refused once, by prepare_tokenizer, naming
// the missing end-of-turn token and the tokenizer file, before any record is rendered.
TEST(ChatTemplateBpeOracle, PrepareTokenizerRefusesTheOtherFamily) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  const auto sp = testing::shared_fixture("llama2-tokenizer.model");
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json") || sp.empty())
    GTEST_SKIP() << "needs .deps/tokenizers/llama3 and ../shared/fixtures/llama2-tokenizer.model";
  Tokenizer llama3 = Tokenizer::load(deps / "llama3"), llama2 = Tokenizer::load(sp);
  const auto refused = [](const std::string& tmpl, Tokenizer tok, const std::string& token) {
    try {
      prepare_tokenizer(*make_template(tmpl), tok);
      ADD_FAILURE() << tmpl << " accepted " << tok.model_path();
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("chat template " + tmpl + ": the tokenizer has no " + token), std::string::npos) << msg;
      EXPECT_NE(msg.find("(tokenizer " + tok.model_path().string() + ")"), std::string::npos) << msg;
    }
  };
  refused("llama-3", llama2, "<|eot_id|>");
  refused("qwen2.5", llama3, "<|im_end|>");
  EXPECT_NO_THROW(prepare_tokenizer(*make_template("llama-3"), llama3));
}

// The SentencePiece templates open with <s> and stop at </s>: on a byte-level tokenizer that has both
// (Llama-3's) they render, on one without a BOS (Qwen's) or without an EOS (a tokenizer.json
// with no tokenizer_config.json) prepare_tokenizer and render refuse naming template and tokenizer.
TEST(ChatTemplateBpeOracle, SentencePieceTemplatesNeedTheTokenizersBosAndEos) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json") || !std::filesystem::exists(deps / "qwen2.5"))
    GTEST_SKIP() << "needs .deps/tokenizers/llama3 and qwen2.5";
  const auto bare = testing::scratch_dir() / "llama3_without_config";
  std::filesystem::create_directories(bare);
  std::filesystem::copy_file(deps / "llama3/tokenizer.json", bare / "tokenizer.json");
  const Tokenizer llama3 = Tokenizer::load(deps / "llama3"), qwen = Tokenizer::load(deps / "qwen2.5"),
                  no_eos = Tokenizer::load(bare);
  ASSERT_EQ(qwen.bos_id(), -1);
  ASSERT_EQ(no_eos.eos_id(), -1);
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  const auto refused = [](const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected an error with " << parts[0];
    } catch (const Error& e) {
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  for (const auto& name : sentencepiece_template_names()) {
    SCOPED_TRACE(name);
    const auto tmpl = make_template(name);
    Tokenizer q = qwen, n = no_eos, l = llama3;
    refused([&] { prepare_tokenizer(*tmpl, q); },
            {"chat template " + name + " opens every conversation with BOS <s>", qwen.model_path().string()});
    refused([&] { tmpl->render(c, q); }, {"chat template " + name, qwen.model_path().string(), "no BOS <s> token"});
    if (!tmpl->added_tokens().empty()) continue;  // chatml's cannot follow Llama-3's added tokens (an id error)
    refused([&] { prepare_tokenizer(*tmpl, n); }, {"chat template " + name, "no EOS token", no_eos.model_path().string()});
    prepare_tokenizer(*tmpl, l);
    const auto ids = tmpl->render(c, l).ids;
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), llama3.bos_id());
    const auto stops = tmpl->stop_ids(l);
    EXPECT_NE(std::find(stops.begin(), stops.end(), llama3.eos_id()), stops.end());
  }
}

// TemplateOptions::default_system replaces Qwen's default sentence and fills Llama-3's empty system
// text, in the rendering and in jinja() alike.
TEST(ChatTemplateBpeOracle, DefaultSystemOption) {
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  TemplateOptions o{std::string("Be brief.")};
  EXPECT_EQ(make_template("qwen2.5", o)->render_text(c),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n");
  EXPECT_NE(make_template("qwen2.5", o)->jinja().find("'Be brief.'"), std::string::npos);
  EXPECT_NE(make_template("llama-3", o)->render_text(c).find("Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"),
            std::string::npos);
  EXPECT_NE(make_template("llama-3", o)->jinja().find("'Be brief.'"), std::string::npos);
}

}  // namespace
}  // namespace agenttune
