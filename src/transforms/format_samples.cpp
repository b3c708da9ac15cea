// Format-following samples (Agent-FLAN §4.2, "j1s1"): the format skill is kept as following
// an explicit request instead of a template memorised for every reply.
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "agenttune/transforms/react.h"
#include "agenttune/transforms/tool_list.h"
#include "agenttune/transforms/transforms.h"
#include "internal.h"

namespace agenttune {
namespace {

using namespace transforms_detail;

struct Candidate {
  const Conversation* conv;
  std::vector<ListedTool> tools;
  std::string query;
  ReactStep call;
};

// ToolBench user turns read "\n<query>\nBegin!\n"; the trailer is part of its protocol.
std::string clean_query(std::string_view s) {
  s = trim(s);
  if (s.ends_with("Begin!")) s = trim(s.substr(0, s.size() - 6));
  return std::string(s);
}

std::string json_call(const ReactStep& call) {
  nlohmann::ordered_json j;
  j["name"] = call.action;
  auto args = nlohmann::ordered_json::parse(call.arguments, nullptr, /*allow_exceptions=*/false);
  j["arguments"] = args.is_discarded() ? nlohmann::ordered_json(call.arguments) : args;
  return j.dump();
}

}  // namespace

std::vector<Conversation> make_format_samples(const std::vector<Conversation>& convs,
                                              const FormatFollowingConfig& config,
                                              TransformReport& report) {
  validate_format(config, "format_following");
  std::vector<Candidate> candidates;
  std::set<std::tuple<std::string, std::string, std::string>> seen;
  for (const Conversation& conv : convs) {
    report.add("conversations_scanned");
    const Turn* system = nullptr;
    size_t t = 0;
    for (; t < conv.turns.size() && conv.turns[t].role == Role::System; ++t) system = &conv.turns[t];
    if (!system || t >= conv.turns.size() || conv.turns[t].role != Role::User) continue;
    ToolList list = parse_toolbench_tools(system->content);
    if (list.status == ToolListStatus::Absent) continue;
    if (list.status == ToolListStatus::Failed) {
      report.add("tool_list_failures");
      report.note(fmt::format("{} (record {}): API list in the system turn did not parse", conv.id,
                              conv.record));
      continue;
    }
    if (list.status == ToolListStatus::Partial) report.add("tool_list_partial");
    std::erase_if(list.tools, [](const ListedTool& s) { return s.name == "Finish"; });
    const Turn* reply = t + 1 < conv.turns.size() ? &conv.turns[t + 1] : nullptr;
    ReactParse p = reply && reply->role == Role::Assistant ? parse_react(reply->content) : ReactParse{};
    if (p.match != ReactMatch::Parsed || p.step.kind != StepKind::Call || !p.step.tool_call ||
        p.step.action == "Finish" || list.tools.empty()) {
      report.add("no_call");
      continue;
    }
    std::string query = clean_query(conv.turns[t].content);
    if (!seen.emplace(query, p.step.action, p.step.arguments).second) {
      report.add("duplicates");  // ToolBench repeats a trajectory's opening in every Step N record
      continue;
    }
    candidates.push_back({&conv, std::move(list.tools), std::move(query), std::move(p.step)});
  }
  report.add("candidates", static_cast<int64_t>(candidates.size()));

  Rng rng(stage_seed(config.seed, "format_following"));
  rng.shuffle(candidates);
  const size_t wanted = static_cast<size_t>(std::max<int64_t>(config.samples, 0));
  const size_t n = std::min(wanted, candidates.size());
  report.add("shortfall", static_cast<int64_t>(wanted - n));
  report.short_of("samples", static_cast<int64_t>(wanted), static_cast<int64_t>(n),
                  fmt::format("the {} conversations scanned hold {} distinct first tool calls "
                              "(no_call={}, duplicates={}, tool_list_failures={}); lower "
                              "format_following.samples or add ToolBench data",
                              report.get("conversations_scanned"), candidates.size(),
                              report.get("no_call"), report.get("duplicates"),
                              report.get("tool_list_failures")));
  const auto n_json = static_cast<size_t>(share(config.json_fraction, n));

  std::vector<Conversation> out;
  for (size_t i = 0; i < n; ++i) {
    const Candidate& c = candidates[i];
    const bool json = i < n_json;
    const std::string& request = rng.pick(json ? config.json_requests : config.string_requests);
    Conversation s;
    s.id = fmt::format("{}_{}_{}:{}", config.source, json ? "json" : "string", i, c.conv->id);
    s.source = config.source;
    s.file = c.conv->file;
    s.record = c.conv->record;
    s.turns.push_back(Turn{Role::System, render_tool_list(c.tools, config.tools_header), false, {}});
    s.turns.push_back(Turn{Role::User, c.query + "\n\n" + request, false, {}});
    s.turns.push_back(Turn{Role::Assistant, json ? json_call(c.call) : c.call.action, true,
                           std::string(capability::instruction_following)});
    report.add(json ? "json" : "string");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace agenttune
