// AgentInstruct's ALFWorld, WebShop and Mind2Web actions, read as AgentBench's parsers read them
// (../shared/spec/agent-eval.md §1.4-§1.6), then normalised for comparison with the gold turn.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "action_internal.h"

namespace agenttune::eval::action_detail {
namespace {

// "put X in Y", "put X on Y", "put X in/on Y" and the grammar's "move X to Y" are one command.
std::string alfworld_put(std::string cmd) {
  auto between = [&](std::string_view verb, std::string_view sep) -> std::optional<std::pair<std::string, std::string>> {
    if (!std::string_view(cmd).starts_with(verb)) return std::nullopt;
    size_t p = cmd.find(sep, verb.size());
    if (p == std::string::npos) return std::nullopt;
    return std::pair{cmd.substr(verb.size(), p - verb.size()), cmd.substr(p + sep.size())};
  };
  for (std::string_view sep : {" in/on ", " in ", " on "})
    if (auto xy = between("put ", sep)) return fmt::format("put {} in/on {}", xy->first, xy->second);
  if (auto xy = between("move ", " to ")) return fmt::format("put {} in/on {}", xy->first, xy->second);
  return cmd;
}

// One of the commands ALFWorld's grammar has (after alfworld_put).
bool alfworld_command(std::string_view cmd) {
  if (cmd == "look" || cmd == "inventory") return true;
  auto with_object = [&](std::string_view verb, std::string_view sep) {
    if (!cmd.starts_with(verb) || cmd.size() == verb.size()) return false;
    if (sep.empty()) return true;
    size_t p = cmd.find(sep, verb.size());
    return p != std::string_view::npos && p > verb.size() && p + sep.size() < cmd.size();
  };
  for (std::string_view verb : {"go to ", "open ", "close ", "use ", "examine "})
    if (with_object(verb, "")) return true;
  if (with_object("take ", " from ") || with_object("put ", " in/on ")) return true;
  for (std::string_view verb : {"clean ", "heat ", "cool ", "slice "})
    if (with_object(verb, " with ")) return true;
  return false;
}

// The button texts a WebShop page offers: its " [SEP] " fields, case-folded.
std::set<std::string> webshop_clickables(std::string_view page) {
  std::set<std::string> out;
  for (size_t b = 0;;) {
    size_t e = page.find("[SEP]", b);
    std::string field = collapse_ws(lower(page.substr(b, e == std::string_view::npos ? e : e - b)));
    if (!field.empty()) out.insert(field);
    if (e == std::string_view::npos) return out;
    b = e + 5;
  }
}

// The letters of the "X. ..." choices in a Mind2Web prompt.
std::set<char> mind2web_choices(std::string_view prompt) {
  std::set<char> out;
  for (std::string_view line : lines_of(prompt)) {
    line = trim(line);
    if (line.size() >= 2 && std::isupper(static_cast<unsigned char>(line[0])) && line[1] == '.' &&
        (line.size() == 2 || line[2] == ' '))
      out.insert(line[0]);
  }
  return out;
}

// The first of `values` that directly follows an occurrence of `marker`.
std::optional<std::string_view> value_after(std::string_view text, std::string_view marker,
                                            std::initializer_list<std::string_view> values) {
  for (size_t p = text.find(marker); p != std::string_view::npos; p = text.find(marker, p + 1)) {
    std::string_view rest = text.substr(p + marker.size());
    for (std::string_view v : values)
      if (rest.starts_with(v)) return v;
  }
  return std::nullopt;
}

}  // namespace

Step parse_alfworld(std::string_view text, const Conversation&) {
  Step s;
  size_t p = text.find("ACTION:");
  if (p == std::string_view::npos) {
    s.fail("no 'ACTION:'");
    return s;
  }
  std::string_view rest = text.substr(p + 7);
  std::string cmd = collapse_ws(lower(rest.substr(0, rest.find('\n'))));
  while (!cmd.empty() && cmd.back() == '.') cmd.pop_back();
  cmd = alfworld_put(std::move(cmd));
  if (cmd.empty()) {
    s.fail("empty ACTION");
    return s;
  }
  s.valid = s.call = true;
  s.action = cmd;
  s.tool_valid = alfworld_command(cmd);
  if (!*s.tool_valid) s.fail(fmt::format("'{}' is not an ALFWorld command", cmd));
  return s;
}

Step parse_webshop(std::string_view text, const Conversation& history) {
  Step s;
  // [Aa]ction: *\n* *((search|click)\[.+?]) : the first "Action:" that such an action follows.
  for (size_t p = text.find("ction:"); p != std::string_view::npos; p = text.find("ction:", p + 1)) {
    if (p == 0 || (text[p - 1] != 'A' && text[p - 1] != 'a')) continue;
    size_t q = p + 6;
    while (q < text.size() && text[q] == ' ') ++q;
    while (q < text.size() && text[q] == '\n') ++q;
    while (q < text.size() && text[q] == ' ') ++q;
    std::string_view rest = text.substr(q);
    for (std::string_view verb : {"search[", "click["}) {
      size_t close = rest.starts_with(verb) ? rest.find(']', verb.size() + 1) : std::string_view::npos;
      if (close == std::string_view::npos) continue;
      std::string value = collapse_ws(lower(rest.substr(verb.size(), close - verb.size())));
      s.valid = s.call = true;
      s.action = fmt::format("{}{}]", verb, value);
      auto page = last_observation(history);
      if (verb == "click[" && page.find("[SEP]") != std::string_view::npos) {
        s.tool_valid = webshop_clickables(page).count(value) > 0;
        if (!*s.tool_valid) s.fail(fmt::format("'{}' is not a button on the page", value));
      }
      return s;
    }
  }
  s.fail("no 'Action:' followed by search[...] or click[...]");
  return s;
}

Step parse_mind2web(std::string_view text, const Conversation& history) {
  Step s;
  auto letter = value_after(text, "Answer: ", {"A", "B", "C", "D", "E", "F"});
  // Mind2Web's own target starts with the bare choice line "C." instead.
  if (std::string_view first = trim(text.substr(0, text.find('\n'))); !letter && first.size() == 2 && first[1] == '.')
    letter = value_after(first, "", {"A", "B", "C", "D", "E", "F"});
  if (!letter) {
    s.fail("no 'Answer: <letter>' and no '<letter>.' line first");
    return s;
  }
  auto choices = mind2web_choices(last_observation(history));
  if (!choices.empty()) s.tool_valid = choices.count((*letter)[0]) > 0;
  if (*letter == "A") {  // "None of the above": no element, no operation
    s.valid = true;
    s.action = "A";
    return s;
  }
  s.call = true;
  auto op = value_after(text, "Action: ", {"CLICK", "SELECT", "TYPE"});
  if (!op) {
    s.fail("no 'Action: CLICK|SELECT|TYPE'");
    return s;
  }
  std::string action = fmt::format("{} {}", *letter, *op);
  if (*op != "CLICK") {
    size_t v = text.find("Value: ");
    if (v == std::string_view::npos) {
      s.fail(fmt::format("Action: {} without a 'Value:' line", *op));
      return s;
    }
    std::string_view rest = text.substr(v + 7);
    action += " " + std::string(trim(rest.substr(0, rest.find('\n'))));
  }
  s.valid = true;
  s.action = action;
  if (s.tool_valid == false) s.fail(fmt::format("choice {} is not offered", *letter));
  return s;
}

}  // namespace agenttune::eval::action_detail
