#pragma once
// Conversations for the action scorer tests, written turn by turn.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <utility>

#include "agenttune/eval/action_score.h"

namespace agenttune::testing {

inline Conversation history(std::initializer_list<std::pair<Role, std::string>> turns) {
  Conversation c;
  c.id = "fixture";
  for (const auto& [role, content] : turns) c.turns.push_back(Turn{role, content, std::nullopt, {}});
  return c;
}

// AgentInstruct's shape: the protocol prompt, the agent's acknowledgement, the task.
inline Conversation task_history(const std::string& protocol, const std::string& task) {
  return history({{Role::User, protocol}, {Role::Assistant, "Ok."}, {Role::User, task}});
}

constexpr Role kSys = Role::System, kUser = Role::User, kAsst = Role::Assistant, kTool = Role::Tool;

// Every field of a score, for one EXPECT per reply.
struct Expect {
  bool format_valid = false;
  std::optional<bool> tool_valid;
  std::optional<bool> args_valid;
  bool action_match = false;
  bool calls_tool = false;
  bool refuses = false;
};

inline void expect_score(const eval::ActionScore& s, const Expect& e, const std::string& what) {
  EXPECT_EQ(s.format_valid, e.format_valid) << what << " why: " << s.why;
  EXPECT_EQ(s.tool_valid, e.tool_valid) << what << " why: " << s.why;
  EXPECT_EQ(s.args_valid, e.args_valid) << what << " why: " << s.why;
  EXPECT_EQ(s.action_match, e.action_match) << what << " reply: " << s.reply_action << " gold: " << s.gold_action;
  EXPECT_EQ(s.calls_tool, e.calls_tool) << what;
  EXPECT_EQ(s.refuses, e.refuses) << what;
  EXPECT_EQ(s.why.empty(), e.action_match) << what << " why: " << s.why;
}

// Several replies to one gold turn.
struct Case {
  std::string reply;
  Expect expect;
  std::string label;
};
inline void expect_cases(AgentTask task, const Conversation& h, const std::string& gold,
                         std::initializer_list<Case> cases) {
  for (const Case& c : cases) expect_score(eval::score_action(task, h, c.reply, gold), c.expect, c.label);
}

}  // namespace agenttune::testing
