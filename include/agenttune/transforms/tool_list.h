#pragma once
// The tool list inside a ToolBench system prompt: "... Specifically, you have access to the
// following APIs: [{'name': ..., 'description': ..., 'parameters': {...}}, ...]" where the list
// is a Python repr (single quotes, True/False/None), not JSON.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace agenttune {

struct ListedTool {
  std::string name;
  std::string description;
};

enum class ToolListStatus {
  Absent,   // the prompt has no API list marker
  Parsed,   // the whole list parsed
  Partial,  // the list as a whole did not parse; some entries were recovered one by one
  Failed,   // marker present, nothing usable
};

struct ToolList {
  ToolListStatus status = ToolListStatus::Absent;
  std::vector<ListedTool> tools;  // in prompt order, entries without a string name skipped
};

ToolList parse_toolbench_tools(std::string_view system_prompt);

// A Python literal (dict, list, tuple, str, int, float, True/False/None) at the start of `text`
// (leading whitespace allowed) as JSON; tuples become arrays, non-string keys their JSON text.
// nullopt when it is malformed; `consumed` gets the characters read on success.
std::optional<nlohmann::json> parse_python_literal(std::string_view text,
                                                   size_t* consumed = nullptr);

// The same with the dict key order kept (tool schemas that templates print with `tojson`).
std::optional<nlohmann::ordered_json> parse_python_literal_ordered(std::string_view text);

// "<header>\n- name: description\n..." (a tool without description is listed by name alone).
std::string render_tool_list(const std::vector<ListedTool>& tools, std::string_view header);

}  // namespace agenttune
