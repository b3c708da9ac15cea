#pragma once
// Parsing one assistant turn written in a ReAct style into its pieces (thought, action,
// arguments, or a final answer). Styles (../shared/spec/recipes.md §1.1, §1.3):
//   ToolBench   "Thought: ..\nAction: name\nAction Input: {json}"  (Finish/give_answer = answer)
//   OS          "Think: ..\n\nAct: bash\n\n```bash ..```", "Act: answer(x)", "Act: finish"
//   DB          "<thought>\nAction: Operation\n```sql ..```", "Action: Answer\nFinal Answer: [..]"
//   KG          "Thought: ..\nAction: fn(args)", "Final Answer: #3"
//   ALFWorld    "THOUGHT: ..\nACTION: go to fridge 1"  (the whole command is the action)
//   WebShop     "Thought: ..\nAction: search[..]" / "click[..]"
#include <string>
#include <string_view>

namespace agenttune {

enum class StepKind { Call, Answer };

struct ReactStep {
  StepKind kind = StepKind::Call;
  std::string thought;    // may be empty (ToolBench's Finish steps often have none)
  std::string action;     // Call: tool or command name
  std::string arguments;  // Call: JSON, fenced block, bracket contents; may be empty
  std::string answer;     // Answer: the final answer text
  bool tool_call = false; // Call in ToolBench function form (Action Input), not an env action
};

enum class ReactMatch {
  NotReact,     // no ReAct marker: a plain reply such as "Ok."
  Parsed,
  Unparseable,  // has markers but no shape above fits (two actions, trailing prose, ...)
};

struct ReactParse {
  ReactMatch match = ReactMatch::NotReact;
  ReactStep step;
};

ReactParse parse_react(std::string_view text);

}  // namespace agenttune
