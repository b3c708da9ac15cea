// qwen2.5 and qwen3: the published Qwen2.5-Instruct and Qwen3 templates (tests/chat/fixtures/
// qwen2.5-instruct.jinja, qwen3.jinja), tool definitions and structured calls included.
//
// Both are ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n", content as is (nothing stripped),
// no BOS, the generation prompt "<|im_start|>assistant\n". What they share:
// - tools: the system turn gains "# Tools ... <tools>" with one `tojson` line per tool and the
//   instruction to answer in <tool_call> blocks (Qwen2.5 writes its default system sentence first
//   when the conversation has none; Qwen3 writes no system text then);
// - calls: after the content, per call "\n<tool_call>\n{"name": N, "arguments": ARGS}\n</tool_call>"
//   (no "\n" before the first when the content is empty), ARGS as json.dumps prints it;
// - results: a run of tool turns is one user turn, "\n<tool_response>\n{content}\n</tool_response>"
//   per result.
// Qwen3 adds its thinking rules: an assistant content "<think>R</think>C" is split into reasoning R
// and content C; turns after the last real user query (one that is not a bare <tool_response>
// wrapper) that are the last message or have reasoning get "<think>\nR\n</think>\n\n" before C,
// the others lose R. Qwen3's enable_thinking=false only changes the generation prompt: it ends with
// "<think>\n\n</think>\n\n" (template qwen3-no-think).
//
// Ids: control tokens by id, each stretch between them as text in one call. The published templates
// are rendered to text and tokenized with added-token matching, so an added token the TEMPLATE
// writes is one id: <tool_call>/</tool_call> (both tokenizers), <tool_response>/</tool_response>
// and <think>/</think> (Qwen3's four added tokens); the same spellings in data stay text, as every
// control spelling does.
//
// Trained (loss != false assistant turns): what the model generates after the prompt
// "<|im_start|>assistant\n": the content, its calls and <|im_end|> (not the "\n" after it, which
// the model never generates). qwen3 trains the think block too; qwen3-no-think does not, since its
// prompt already holds the (empty) block.
#include <fmt/format.h>

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "agenttune/util/error.h"
#include "py_json.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kQwenSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
constexpr std::string_view kToolsIntro =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
constexpr std::string_view kToolsOutro =
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>";

using Spellings = std::vector<std::string_view>;
const Spellings kQwen25Added = {"<tool_call>", "</tool_call>"};
const Spellings kQwen3Added = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"};

// Text the template itself writes: the tokenizer's added tokens in it become their ids.
void written(Rendering& r, std::string_view s, bool trained, const Spellings& added) {
  while (!s.empty()) {
    size_t at = std::string_view::npos;
    std::string_view token;
    for (auto a : added)
      if (size_t p = s.find(a); p < at) at = p, token = a;
    if (at == std::string_view::npos) break;
    r.text(s.substr(0, at), trained);
    r.special(token, trained);
    s.remove_prefix(at + token.size());
  }
  r.text(s, trained);
}

std::string_view strip_newlines(std::string_view s, bool left, bool right) {
  while (left && !s.empty() && s.front() == '\n') s.remove_prefix(1);
  while (right && !s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

// The "# Tools" part of the system turn, after the system text; `system` null = none written.
void tools_system(Rendering& r, const Conversation& conv, const std::string* system, const std::string& tmpl,
                  const Spellings& added) {
  r.special("<|im_start|>");
  r.text("system\n");
  if (system) r.text(*system + "\n\n");
  written(r, kToolsIntro, false, added);
  for (size_t i = 0; i < conv.tools.size(); ++i)
    r.text("\n" + chat_detail::py_tojson(conv.tools[i].json, -1,
                                         fmt::format("chat template {}: {} tool {} ('{}')", tmpl,
                                                     chat_detail::where(conv), i, conv.tools[i].name)));
  written(r, kToolsOutro, false, added);
  r.special("<|im_end|>");
  r.text("\n");
}

void tool_calls(Rendering& r, const Conversation& conv, const Turn& t, bool newline_first, bool trained,
                const std::string& tmpl) {
  for (size_t k = 0; k < t.tool_calls.size(); ++k) {
    const ToolCall& c = t.tool_calls[k];
    if (k > 0 || newline_first) r.text("\n", trained);
    r.special("<tool_call>", trained);
    auto what = fmt::format("chat template {}: {} call {} ('{}') arguments", tmpl, chat_detail::where(conv), k, c.name);
    r.text("\n{\"name\": \"" + c.name + "\", \"arguments\": " + chat_detail::py_tojson(c.arguments, -1, what) + "}\n",
           trained);
    r.special("</tool_call>", trained);
  }
}

// Tool turn i: consecutive results share one user turn.
void tool_result(Rendering& r, const std::vector<Turn>& turns, size_t i, const Spellings& added) {
  if (i == 0 || turns[i - 1].role != Role::Tool) {
    r.special("<|im_start|>");
    r.text("user");
  }
  written(r, "\n<tool_response>\n", false, added);
  r.text(turns[i].content);
  written(r, "\n</tool_response>", false, added);
  if (i + 1 == turns.size() || turns[i + 1].role != Role::Tool) {
    r.special("<|im_end|>");
    r.text("\n");
  }
}

// An assistant turn's end: its calls, <|im_end|>, "\n".
void assistant_end(Rendering& r, const Conversation& conv, const Turn& t, bool content_written, bool trained,
                   const std::string& tmpl) {
  tool_calls(r, conv, t, content_written, trained, tmpl);
  r.special("<|im_end|>", trained);
  r.text("\n");
}

// Jinja shared by both exports: a message's calls (published form, `tojson` arguments) and the
// tool-result run.
constexpr const char* kJinjaCallsMacro =
    "{%- macro calls(message, content) %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if (loop.first and content) or (not loop.first) %}{{- '\\n' }}{%- endif %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' + tool_call.arguments | tojson + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endmacro %}";
constexpr const char* kJinjaToolResult =
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}";

// The system turn's "# Tools" part, after its text.
std::string jinja_tools_block() {
  return "{{- " + chat_detail::jinja_literal(kToolsIntro) + " }}" +
         "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}" + "{{- " +
         chat_detail::jinja_literal(std::string(kToolsOutro) + "<|im_end|>\n") + " }}";
}

class QwenTemplate final : public ChatTemplate {
 public:
  explicit QwenTemplate(const TemplateOptions& o) : system_(o.default_system.value_or(kQwenSystem)) {}
  std::string name() const override { return "qwen2.5"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    auto end = tok.piece_to_id("<|im_end|>");
    if (!end) fail("chat template qwen2.5: the tokenizer has no <|im_end|>; it needs Qwen's tokenizer.json");
    return {*end};
  }

  std::string jinja() const override {
    return std::string(kJinjaCallsMacro) +
           "{%- if messages and messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
           "{%- else %}{%- set system = " + chat_detail::jinja_literal(system_) + " %}{%- endif %}"
           "{%- if tools %}{{- '<|im_start|>system\\n' + system + '\\n\\n' }}" + jinja_tools_block() +
           "{%- else %}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}{%- endif %}"
           "{%- for message in messages %}"
           "{%- if message['role'] == 'tool' %}" + kJinjaToolResult +
           "{%- elif not (loop.first and message['role'] == 'system') %}"
           "{{- '<|im_start|>' + message['role'] + '\\n' }}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false %}"
           "{% generation %}{{- message['content'] + calls(message, message['content']) + '<|im_end|>' }}{% endgeneration %}"
           "{%- else %}{{- message['content'] + calls(message, message['content']) + '<|im_end|>' }}{%- endif %}"
           "{{- '\\n' }}"
           "{%- endif %}"
           "{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    const auto& turns = conv.turns;
    const bool own_system = !turns.empty() && turns[0].role == Role::System;
    const std::string& system = own_system ? turns[0].content : system_;
    if (!conv.tools.empty())
      tools_system(r, conv, &system, name(), kQwen25Added);
    else
      chat_detail::chatml_turn(r, "system", system, false, false);
    for (size_t i = own_system ? 1 : 0; i < turns.size(); ++i) {
      const Turn& t = turns[i];
      if (t.role == Role::Tool) {
        tool_result(r, turns, i, kQwen25Added);
      } else if (t.role != Role::Assistant || t.tool_calls.empty()) {
        chat_detail::chatml_turn(r, role_name(t.role), t.content, trains(t), false);
      } else {
        r.special("<|im_start|>");
        r.text("assistant\n");
        r.text(t.content, trains(t));
        assistant_end(r, conv, t, !t.content.empty(), trains(t), name());
      }
    }
    if (open) chat_detail::chatml_open(r);
  }

 private:
  std::string system_;
};

class Qwen3Template final : public ChatTemplate {
 public:
  Qwen3Template(bool thinking, const TemplateOptions& o) : thinking_(thinking), system_(o.default_system) {}
  std::string name() const override { return thinking_ ? "qwen3" : "qwen3-no-think"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    auto end = tok.piece_to_id("<|im_end|>");
    if (!end || !tok.piece_to_id("</think>"))
      fail("chat template {}: the tokenizer has no <|im_end|> or </think>; it needs Qwen3's tokenizer.json", name());
    return {*end};
  }

  std::string jinja() const override {
    // The published template with {% generation %} around what the model writes, the default
    // system text (when set) standing in for a missing system turn, and for qwen3-no-think the
    // empty think block unless enable_thinking=true is passed.
    const std::string think = "'<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'";
    const std::string body = "content.lstrip('\\n') if thought else content";
    const std::string out = "(" + body + ") + calls(message, content) + '<|im_end|>'";
    const std::string assistant_out =
        thinking_ ? "{% generation %}{{- (" + think + " if thought else '') + " + out + " }}{% endgeneration %}"
                  : "{{- " + think + " if thought else '' }}{% generation %}{{- " + out + " }}{% endgeneration %}";
    const std::string untrained_out = "{{- (" + think + " if thought else '') + " + out + " }}";
    return std::string(kJinjaCallsMacro) +
           "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content %}"
           "{%- else %}{%- set system = " + (system_ ? chat_detail::jinja_literal(*system_) : std::string("none")) +
           " %}{%- endif %}"
           "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if system is not none %}{{- system + '\\n\\n' }}{%- endif %}" +
           jinja_tools_block() +
           "{%- elif system is not none %}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}{%- endif %}"
           "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
           "{%- for message in messages[::-1] %}"
           "{%- set index = (messages|length - 1) - loop.index0 %}"
           "{%- if ns.multi_step_tool and message.role == 'user' and not(message.content.startswith('<tool_response>') "
           "and message.content.endswith('</tool_response>')) %}"
           "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}"
           "{%- endif %}"
           "{%- endfor %}"
           "{%- for message in messages %}"
           "{%- set content = message.content %}"
           "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
           "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
           "{%- elif message.role == 'assistant' %}"
           "{%- set reasoning_content = '' %}"
           "{%- if '</think>' in content %}"
           "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
           "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
           "{%- endif %}"
           "{%- set thought = loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
           "{{- '<|im_start|>assistant\\n' }}"
           "{%- if message.get('loss', true) != false %}" + assistant_out + "{%- else %}" + untrained_out + "{%- endif %}"
           "{{- '\\n' }}"
           "{%- elif message.role == 'tool' %}" + kJinjaToolResult +
           "{%- endif %}"
           "{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
           "{%- if enable_thinking is defined and enable_thinking is false" +
           (thinking_ ? "" : " or enable_thinking is not defined") +
           " %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    const auto& turns = conv.turns;
    const bool own_system = !turns.empty() && turns[0].role == Role::System;
    const std::string* system = own_system ? &turns[0].content : system_ ? &*system_ : nullptr;
    if (!conv.tools.empty())
      tools_system(r, conv, system, name(), kQwen3Added);
    else if (system)
      chat_detail::chatml_turn(r, "system", *system, false, false);
    const size_t last_query = last_query_index(turns);
    for (size_t i = own_system ? 1 : 0; i < turns.size(); ++i) {
      const Turn& t = turns[i];
      if (t.role == Role::Tool)
        tool_result(r, turns, i, kQwen3Added);
      else if (t.role == Role::Assistant)
        assistant(r, conv, i, last_query);
      else
        chat_detail::chatml_turn(r, role_name(t.role), t.content, false, false);
    }
    if (open) {
      chat_detail::chatml_open(r);
      if (!thinking_) written(r, "<think>\n\n</think>\n\n", false, kQwen3Added);
    }
  }

 private:
  // The last user turn that is a real query (not a bare "<tool_response>...</tool_response>"):
  // reasoning is kept only after it. None = the last index, as the published template does.
  static size_t last_query_index(const std::vector<Turn>& turns) {
    for (size_t i = turns.size(); i-- > 0;) {
      const std::string& c = turns[i].content;
      if (turns[i].role == Role::User && !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>"))) return i;
    }
    return turns.empty() ? 0 : turns.size() - 1;
  }

  void assistant(Rendering& r, const Conversation& conv, size_t i, size_t last_query) const {
    const Turn& t = conv.turns[i];
    std::string_view content = t.content, reasoning;
    if (size_t end = content.find("</think>"); end != std::string_view::npos) {
      std::string_view before = strip_newlines(content.substr(0, end), false, true);
      if (size_t open = before.rfind("<think>"); open != std::string_view::npos) before.remove_prefix(open + 7);
      reasoning = strip_newlines(before, true, false);
      content = strip_newlines(content.substr(content.rfind("</think>") + 8), true, false);
    }
    const bool trained = trains(t);
    r.special("<|im_start|>");
    r.text("assistant\n");
    if (i > last_query && (i + 1 == conv.turns.size() || !reasoning.empty())) {
      const bool think_trained = trained && thinking_;
      r.special("<think>", think_trained);
      r.text("\n" + std::string(strip_newlines(reasoning, true, true)) + "\n", think_trained);
      r.special("</think>", think_trained);
      r.text("\n\n", think_trained);
      r.text(strip_newlines(content, true, false), trained);
    } else {
      r.text(content, trained);
    }
    assistant_end(r, conv, t, !content.empty(), trained, name());
  }

  bool thinking_;
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_qwen_template(const TemplateOptions& o) {
  return std::make_unique<QwenTemplate>(o);
}

std::unique_ptr<ChatTemplate> make_qwen3_template(bool thinking, const TemplateOptions& o) {
  return std::make_unique<Qwen3Template>(thinking, o);
}

}  // namespace agenttune
