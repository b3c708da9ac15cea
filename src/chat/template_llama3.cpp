// llama-3: Meta's Llama-3.1 / 3.3 Instruct chat template (tests/chat/fixtures/llama-3.1-instruct.jinja),
// with its custom tool calling.
//
// Text: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + ("Environment: ipython\n"
// when the conversation offers tools) + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul
// 2024\n\n{system.strip()}<|eot_id|>" (the system block is always there, empty system text when the
// conversation has none), then per message "<|start_header_id|>{role}<|end_header_id|>\n\n
// {content.strip()}<|eot_id|>"; the generation prompt ends "<|start_header_id|>assistant<|end_header_id|>\n\n".
// The date is the published template's own default ("26 Jul 2024", what apply_chat_template
// renders when no date_string is passed); it is fixed here because a date that changes per run
// would make prepared shards differ by day.
//
// Tools (Conversation::tools) go where the published template puts them by default
// (tools_in_user_message = true): the first user message becomes the fixed instruction, each tool
// as tojson(indent=4) + "\n\n", then the message's own stripped text. The template takes whatever
// message comes first as that user message; a conversation whose first turn after the system is
// not a user turn is refused instead of rendering an assistant or tool turn as user text.
//
// A call (Turn::tool_calls) is the assistant message '{"name": "<name>", "parameters": <arguments
// | tojson>}' closed by <|eot_id|>: the template writes <|eom_id|> only when builtin_tools
// (brave_search, wolfram_alpha, code_interpreter) are defined, which a Conversation does not offer,
// so every call here ends its turn with <|eot_id|>. The published template raises on more than one
// call per message (we raise the same) and drops the message's text when it has a call (we refuse
// that: the text would be lost from training without a trace; put it in its own assistant turn).
//
// Tool turns are what the published template makes of a tool/ipython message whose content is a
// string: "<|start_header_id|>ipython<|end_header_id|>\n\n{content | tojson}<|eot_id|>" (a string is
// "iterable" to Jinja, so the result is written as a JSON string literal, quotes and escapes
// included, as json.dumps(ensure_ascii=False) writes it). The template has no place for the tool's
// name (Turn::name): the result follows its call, which names it.
//
// Ids: the header and end tokens by id, each stretch between them as text in one call. Trained
// (loss != false assistant messages, calls included): content + <|eot_id|>.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <memory>

#include "agenttune/util/error.h"
#include "py_json.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kDateLines = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
constexpr const char* kEnvironmentLine = "Environment: ipython\n";
// The published text verbatim, the missing spaces after "prompt." and "value}." included.
constexpr const char* kToolsInstruction =
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": "
    "dictionary of argument name and its value}.Do not use variables.\n\n";
// The published template's own errors.
constexpr const char* kNoFirstUser = "Cannot put tools in the first user message when there's no first user message!";
constexpr const char* kSingleCall = "This model only supports single tool-calls at once!";

class Llama3Template final : public ChatTemplate {
 public:
  explicit Llama3Template(const TemplateOptions& o) : system_(o.default_system) {}
  std::string name() const override { return "llama-3"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    std::vector<int32_t> out;
    for (const char* t : {"<|eot_id|>", "<|eom_id|>"}) {
      auto id = tok.piece_to_id(t);
      if (!id) fail("chat template llama-3: the tokenizer has no {}; it needs Llama-3's tokenizer.json", t);
      out.push_back(*id);
    }
    return out;
  }

  std::string jinja() const override {
    const std::string default_system = chat_detail::jinja_literal(system_ ? chat_detail::py_strip(*system_) : "");
    return "{{- bos_token }}"
           "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
           "{%- if messages and messages[0]['role'] == 'system' %}"
           "{%- set system_message = messages[0]['content'] | trim %}{%- set loop_messages = messages[1:] %}"
           "{%- else %}{%- set system_message = " + default_system + " %}{%- set loop_messages = messages %}{%- endif %}"
           "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
           "{%- if tools %}{{- " + chat_detail::jinja_literal(kEnvironmentLine) + " }}{%- endif %}"
           "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
           "{{- 'Today Date: ' + date_string + '\\n\\n' + system_message + '<|eot_id|>' }}"
           "{%- if tools %}"
           "{%- if loop_messages | length == 0 %}{{- raise_exception(" + chat_detail::jinja_literal(kNoFirstUser) + ") }}{%- endif %}"
           "{%- if loop_messages[0]['role'] != 'user' %}{{- raise_exception(" +
           chat_detail::jinja_literal(first_not_user("the first message after the system message")) + ") }}{%- endif %}"
           "{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' + " + chat_detail::jinja_literal(kToolsInstruction) + " }}"
           "{%- for t in tools %}{{- t | tojson(indent=4) + '\\n\\n' }}{%- endfor %}"
           "{{- loop_messages[0]['content'] | trim + '<|eot_id|>' }}"
           "{%- set loop_messages = loop_messages[1:] %}"
           "{%- endif %}"
           "{%- for message in loop_messages %}"
           "{%- if message['role'] == 'tool' or message['role'] == 'ipython' %}"
           "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message['content'] | tojson + '<|eot_id|>' }}"
           "{%- else %}"
           "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
           "{%- if message.get('tool_calls') %}"
           "{%- if message['tool_calls'] | length != 1 %}{{- raise_exception(" + chat_detail::jinja_literal(kSingleCall) + ") }}{%- endif %}"
           "{%- if message.get('content') and message['content'] | trim != '' %}{{- raise_exception(" +
           chat_detail::jinja_literal(kTextWithCall) + ") }}{%- endif %}"
           "{%- set call = message['tool_calls'][0]['function'] %}"
           "{%- set body = '{\"name\": \"' + call['name'] + '\", \"parameters\": ' + call['arguments'] | tojson + '}' %}"
           "{%- else %}{%- set body = message['content'] | trim %}{%- endif %}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false %}"
           "{% generation %}{{- body + '<|eot_id|>' }}{% endgeneration %}"
           "{%- else %}{{- body + '<|eot_id|>' }}{%- endif %}"
           "{%- endif %}"
           "{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    r.special("<|begin_of_text|>");
    size_t next = 0;
    std::string system = system_ ? *system_ : "";
    if (!conv.turns.empty() && conv.turns[0].role == Role::System) system = conv.turns[0].content, next = 1;
    const bool tools = !conv.tools.empty();
    header(r, "system");
    r.text((tools ? kEnvironmentLine : "") + std::string(kDateLines) + chat_detail::py_strip(system));
    r.special("<|eot_id|>");
    if (tools) tools_message(conv, next++, r);
    for (size_t i = next; i < conv.turns.size(); ++i) {
      const Turn& t = conv.turns[i];
      if (t.role == Role::Tool) {
        header(r, "ipython");
        r.text(json_string(t.content, conv));
        r.special("<|eot_id|>");
        continue;
      }
      header(r, role_name(t.role));
      r.text(t.tool_calls.empty() ? chat_detail::py_strip(t.content) : call_text(conv, i), trains(t));
      r.special("<|eot_id|>", trains(t));
    }
    if (open) header(r, "assistant");
  }

 private:
  static constexpr const char* kTextWithCall =
      "an assistant message with a tool call has text too, which the Llama-3.1 template would drop; put the text in "
      "an assistant message of its own";

  static std::string first_not_user(const std::string& which) {
    return "the tools go into the first user message, and " + which +
           " is not a user message (the Llama-3.1 template would render it as the user's)";
  }

  // The first user message, carrying the tool definitions (the published default,
  // tools_in_user_message = true).
  static void tools_message(const Conversation& conv, size_t index, Rendering& r) {
    if (index >= conv.turns.size()) fail("{}", context(conv, kNoFirstUser));
    const Turn& first = conv.turns[index];
    if (first.role != Role::User)
      fail("{}", context(conv, first_not_user(fmt::format("turn {} ({})", index, role_name(first.role)))));
    std::string text = kToolsInstruction;
    for (size_t k = 0; k < conv.tools.size(); ++k)
      text += chat_detail::py_tojson(conv.tools[k].json, 4, context(conv, fmt::format("tool definition {}", k))) + "\n\n";
    header(r, "user");
    r.text(text + chat_detail::py_strip(first.content));
    r.special("<|eot_id|>");
  }

  // '{"name": "<name>", "parameters": <arguments | tojson>}', the name written as is, like the template.
  static std::string call_text(const Conversation& conv, size_t index) {
    const Turn& t = conv.turns[index];
    if (t.tool_calls.size() != 1)
      fail("{}", context(conv, fmt::format("turn {} has {} tool calls: {}", index, t.tool_calls.size(), kSingleCall)));
    if (!chat_detail::py_strip(t.content).empty()) fail("{}", context(conv, fmt::format("turn {}: {}", index, kTextWithCall)));
    const ToolCall& call = t.tool_calls[0];
    return "{\"name\": \"" + call.name + "\", \"parameters\": " +
           chat_detail::py_tojson(call.arguments, -1, context(conv, fmt::format("the arguments of the call in turn {}", index))) +
           "}";
  }

  // "<|start_header_id|>{role}<|end_header_id|>\n\n" (the "\n\n" opens the next stretch of text).
  static void header(Rendering& r, const std::string& role) {
    r.special("<|start_header_id|>");
    r.text(role);
    r.special("<|end_header_id|>");
    r.text("\n\n");
  }
  static std::string context(const Conversation& conv, const std::string& what) {
    return fmt::format("chat template llama-3: {}: {}", chat_detail::where(conv), what);
  }
  // Python's json.dumps(s, ensure_ascii=False), which nlohmann's dump without ASCII escaping equals
  // for valid UTF-8 (the same escapes: \", \\, \b, \f, \n, \r, \t, other controls as \u00xx).
  static std::string json_string(const std::string& s, const Conversation& conv) {
    try {
      return nlohmann::json(s).dump(-1, ' ', false);
    } catch (const nlohmann::json::exception& e) {
      fail("{}", context(conv, fmt::format("a tool turn is not valid UTF-8 ({})", e.what())));
    }
  }
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_llama3_template(const TemplateOptions& o) {
  return std::make_unique<Llama3Template>(o);
}

}  // namespace agenttune
