#include "agenttune/chat/conversation.h"

namespace agenttune {

const char* role_name(Role r) {
  switch (r) {
    case Role::System: return "system";
    case Role::User: return "user";
    case Role::Assistant: return "assistant";
    case Role::Tool: return "tool";
  }
  return "?";
}

}  // namespace agenttune
