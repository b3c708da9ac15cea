#pragma once
// ReAct agent data (ToolBench's "Thought/Action/Action Input" with the APIs listed in the system
// prompt, and Agent-FLAN's ToolBench part, the same with lagent's tool list and "Response:"
// observations) made structured, so that the templates that know tools (llama-3, qwen2.5, qwen3)
// render it in the family's own tool-call format: the one a served model is parsed with (vLLM's
// llama3_json and hermes parsers).
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/chat/conversation.h"
#include "agenttune/config/scalars.h"
#include "agenttune/transforms/report.h"

namespace agenttune {

// How a dataset's tool calls reach the template (SFT prepare's datasets[].tool_calls).
enum class ToolCallForm {
  Auto,    // native when the template renders tools, else text
  Native,  // structured; an error with a template that cannot render tools
  Text,    // ReAct text as the data has it
};

template <>
struct EnumNames<ToolCallForm> {
  static constexpr std::array<std::pair<ToolCallForm, std::string_view>, 3> values = {
      {{ToolCallForm::Auto, "auto"}, {ToolCallForm::Native, "native"}, {ToolCallForm::Text, "text"}}};
};

struct NativeCallOptions {
  // Keep a call step's thought as the assistant content beside the call. Llama-3.1's published
  // template prints only the call of such a turn, so for llama-3 the thought is left out rather
  // than trained in a turn the template cannot render.
  bool thought_with_call = true;
};

// How conversations are converted for `chat_template`; nullopt when it cannot render tools (not in
// chat/template_tokenizers.h's tool_template_names()). Prepare and eval share it, so eval's
// histories are converted as the model's training data was.
std::optional<NativeCallOptions> native_call_options(const std::string& chat_template);

// Converts each conversation whose system turn lists tools (ToolBench's "you have access to the
// following APIs: [...]" or Agent-FLAN's bare "[{'name': ...}]", Python reprs) as a whole:
//   - tools: one OpenAI function entry per listed API except Finish, {"type": "function",
//     "function": {"name", "description", "parameters"}}, keys in the data's order; ToolBench's
//     "optional" list is left out (not JSON Schema), lagent's [{name, type}] list becomes
//     properties with lower-cased types. The system turn that held the list (the ReAct protocol
//     prompt) is removed: the template's own tool prompt replaces it.
//   - each "Action: f / Action Input: {json}" step -> a ToolCall (content: the thought, see above);
//     Finish with give_answer -> a plain reply with its final_answer; "Final Answer: x" -> x.
//   - the observation after a call (ToolBench's function turn, Agent-FLAN's "Response: ..." user
//     turn) -> a Tool turn named after the call.
// A conversation where any step does not fit stays text, counted under text.<reason>: no_tool_list,
// unparseable_step (ReAct markers in no known shape), not_a_function_call (an environment action
// such as click[...]), unlisted_tool (a call to a tool the list lacks, Finish's give_up_and_restart
// included), arguments_not_object, result_without_call, user_turn_after_call (an Agent-FLAN user
// turn after a call that is not a "Response:"), no_react_steps (a tool list but no ReAct step:
// chat-aligned data). General chat without a tool list is untouched (text.no_tool_list).
// Conversations that are structured already (OpenAI records with tools / tool_calls) are left
// as they are (counted as structured).
// Counts: conversations, native, structured, calls, answers, tool_results, thoughts_dropped,
// text.<reason>.
void to_native_tool_calls(std::vector<Conversation>& conversations, const NativeCallOptions& options,
                          TransformReport& report);

}  // namespace agenttune
