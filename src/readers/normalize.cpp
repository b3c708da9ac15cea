// From a schema's raw turns to the shape every template expects: known roles, non-empty content
// (or structured calls), system turns first, then user and assistant alternating (tool results on
// the user side; several in a row answer one turn's parallel calls).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {

struct Placed {
  Turn turn;
  std::string field;  // role field of the (first) source turn, for messages
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Counts are staged here and added to the report only if the record is kept, so a record
// dropped for one reason does not also show up under the repairs made to it before.
struct Staged {
  std::map<std::string, int64_t> dropped_turns, mapped_roles;
  int64_t merged = 0;
  std::vector<std::string> messages;
  void commit(ReadReport& r) {
    for (auto& [k, n] : dropped_turns) r.dropped_turns[k] += n;
    for (auto& [k, n] : mapped_roles) r.mapped_roles[k] += n;
    r.merged_turns += merged;
    for (auto& m : messages) r.note(std::move(m));
  }
};

std::optional<Role> resolve_role(const RawTurn& t, const Schema& s, const RolePolicy& policy,
                                 const Where& where, Staged& staged) {
  std::string name = lower(t.role);
  for (const auto& [own, role] : s.roles)
    if (name == own) return role;
  if (auto it = policy.aliases.find(name); it != policy.aliases.end()) {
    ++staged.mapped_roles[fmt::format("{} -> {}", t.role, role_name(it->second))];
    return it->second;
  }
  std::vector<std::string> known;
  for (const auto& [own, role] : s.roles) known.push_back(own);
  for (const auto& [alias, role] : policy.aliases)
    if (std::find(known.begin(), known.end(), alias) == known.end()) known.push_back(alias);
  std::string msg = where.field_msg(
      t.field, fmt::format("unknown role '{}' (known: {})", t.role, fmt::join(known, ", ")));
  if (policy.unknown == OnProblem::Error)
    fail("{}; add it to the role aliases or set unknown roles to drop", msg);
  ++staged.dropped_turns[fmt::format("unknown role '{}'", t.role)];
  staged.messages.push_back(msg + " (turn dropped)");
  return std::nullopt;
}

// The merged turn trains only if both parts would have: text the data marked untrained must not
// become trained by being glued to a neighbour.
void merge_into(Turn& into, const Turn& from) {
  into.content += "\n\n" + from.content;
  if (into.loss != from.loss) into.loss = trains(into) && trains(from);
}

// Index of the first turn that breaks "system*, user, assistant, (user or tool+), assistant, ...",
// with the reason; nullopt when the order is fine.
std::optional<std::pair<size_t, std::string>> alternation_error(const std::vector<Placed>& turns) {
  size_t i = 0;
  while (i < turns.size() && turns[i].turn.role == Role::System) ++i;
  if (i == turns.size()) return std::nullopt;
  if (turns[i].turn.role != Role::User)
    return std::pair{i, fmt::format("the first turn after system turns is {}, expected user",
                                    role_name(turns[i].turn.role))};
  for (size_t j = i + 1; j < turns.size(); ++j) {
    Role prev = turns[j - 1].turn.role, cur = turns[j].turn.role;
    // Tool after tool: the results of one turn's parallel calls.
    bool ok = cur == Role::System       ? false
              : prev == Role::Assistant ? cur != Role::Assistant
              : prev == Role::Tool      ? cur != Role::User
                                        : cur == Role::Assistant;
    if (!ok)
      return std::pair{
          j, fmt::format("{} turn follows {} {} turn; user and assistant turns must "
                         "alternate (system turns only at the start)",
                         role_name(cur), prev == Role::Assistant ? "an" : "a", role_name(prev))};
  }
  return std::nullopt;
}

}  // namespace

std::optional<Conversation> normalize(RawRecord raw, const Schema& s, const ReadPolicies& p,
                                      const Where& where, ReadReport& report) {
  Staged staged;
  std::vector<Placed> turns;
  for (auto& t : raw.turns) {
    auto role = resolve_role(t, s, p.roles, where, staged);
    if (!role) continue;
    if (blank(t.content) && t.tool_calls.empty()) {
      std::string content_field = t.field.substr(0, t.field.rfind('.') + 1) + s.content_key;
      record_issue("empty_content",
                   where.field_msg(content_field, "empty or whitespace-only content"));
    }
    Turn turn{*role, std::move(t.content), t.loss, {}};
    turn.tool_calls = std::move(t.tool_calls);
    turn.name = std::move(t.name);
    turns.push_back(Placed{std::move(turn), std::move(t.field)});
  }

  if (p.drop_leading_assistant) {
    size_t first = 0;
    while (first < turns.size() && turns[first].turn.role == Role::System) ++first;
    size_t end = first;
    while (end < turns.size() && turns[end].turn.role == Role::Assistant) ++end;
    if (end > first) {
      staged.dropped_turns["leading assistant turn"] += static_cast<int64_t>(end - first);
      turns.erase(turns.begin() + first, turns.begin() + end);
    }
  }

  if (p.alternation == Alternation::Merge) {
    std::vector<Placed> merged;
    for (auto& t : turns) {
      // Tool turns stay apart: each is the result of one of the calls before them.
      if (!merged.empty() && merged.back().turn.role == t.turn.role && t.turn.role != Role::Tool) {
        merge_into(merged.back().turn, t.turn);
        ++staged.merged;
      } else {
        merged.push_back(std::move(t));
      }
    }
    turns = std::move(merged);
  }

  if (auto bad = alternation_error(turns)) {
    std::string msg = where.field_msg(turns[bad->first].field, bad->second);
    if (p.alternation == Alternation::Error)
      fail("{}; set the alternation policy to merge or drop to repair or skip such records", msg);
    ++report.dropped_records["non_alternating"];
    report.note(msg + " (record dropped)");
    return std::nullopt;
  }
  if (std::none_of(turns.begin(), turns.end(),
                   [](const Placed& t) { return t.turn.role == Role::Assistant; }))
    record_issue("no_assistant_turn",
                 where.field_msg(s.turns_key, "no assistant turn left to train on"));

  Conversation c;
  c.id = std::move(raw.id);
  c.tools = std::move(raw.tools);
  for (auto& t : turns) c.turns.push_back(std::move(t.turn));
  staged.commit(report);
  return c;
}

}  // namespace agenttune::readers
