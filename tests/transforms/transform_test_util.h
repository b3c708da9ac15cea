#pragma once
// Builders and a turn-by-turn comparison for the transforms tests.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "agenttune/chat/conversation.h"
#include "agenttune/transforms/transform_config.h"

namespace agenttune::testing {

inline Turn turn(Role r, std::string content, std::optional<bool> loss = std::nullopt,
                 std::string cap = {}) {
  return Turn{r, std::move(content), loss, std::move(cap)};
}
inline Turn sys(std::string c) { return turn(Role::System, std::move(c)); }
inline Turn user(std::string c, std::optional<bool> loss = std::nullopt) {
  return turn(Role::User, std::move(c), loss);
}
inline Turn asst(std::string c, std::optional<bool> loss = std::nullopt, std::string cap = {}) {
  return turn(Role::Assistant, std::move(c), loss, std::move(cap));
}
inline Turn tool(std::string c) { return turn(Role::Tool, std::move(c)); }

inline Conversation conv(std::string id, std::vector<Turn> turns, std::string source = "agent") {
  Conversation c;
  c.id = std::move(id);
  c.source = std::move(source);
  c.turns = std::move(turns);
  return c;
}

inline std::string describe(const std::optional<bool>& l) {
  return l ? (*l ? "true" : "false") : "unset";
}

inline void expect_turns(const std::vector<Turn>& got, const std::vector<Turn>& want) {
  ASSERT_EQ(got.size(), want.size()) << "turn count";
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("turn " + std::to_string(i));
    EXPECT_EQ(role_name(got[i].role), std::string(role_name(want[i].role)));
    EXPECT_EQ(got[i].content, want[i].content);
    EXPECT_EQ(describe(got[i].loss), describe(want[i].loss));
    EXPECT_EQ(got[i].capability, want[i].capability);
  }
}

// One phrasing per elicit kind, so expected turns can be written out literally.
inline AlignConfig fixed_align() {
  AlignConfig c;
  c.keep_react_fraction = 0.0;
  c.tool_elicits = {"Which tool?"};
  c.action_elicits = {"Which action?"};
  c.argument_elicits = {"Arguments?"};
  c.answer_elicits = {"Answer?"};
  return c;
}

inline const std::string kToolBenchSystem =
    "You are AutoGPT. Answer in the form Thought/Action/Action Input.\nSpecifically, you have "
    "access to the following APIs: [{'name': 'current_for_weatherly', 'description': 'This is "
    "the subfunction for tool \"weatherly\": current conditions for a city.', 'parameters': "
    "{'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city'], "
    "'optional': []}}, {'name': 'convert_for_unitsmith', 'description': 'Converts a value "
    "between units.', 'parameters': {'type': 'object', 'properties': {}, 'required': []}}, "
    "{'name': 'Finish', 'description': 'Call this last.', 'parameters': {'type': 'object', "
    "'properties': {'return_type': {'type': 'string', 'enum': ['give_answer', "
    "'give_up_and_restart']}}, 'required': ['return_type']}}]";

}  // namespace agenttune::testing
