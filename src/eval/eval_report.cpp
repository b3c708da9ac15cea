#include "agenttune/eval/eval_report.h"

#include <fmt/format.h>

#include <algorithm>

namespace agenttune::eval {

namespace {

constexpr const char* kOpen = "⟦";
constexpr const char* kClose = "⟧";

bool continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? fmt::format("{:.1f}", 100.0 * part / whole) : "-";
}

nlohmann::json share(int64_t part, int64_t whole) {
  return whole > 0 ? nlohmann::json(static_cast<double>(part) / whole) : nlohmann::json(nullptr);
}

bool failed(const TurnResult& t) { return t.negative ? t.hallucinated : !t.score.action_match; }

// One line per string: newlines and tabs shown as \n and \t so a multi-line action stays on its row,
// other control bytes (a terminal's escape sequences in an observation) as \xNN.
std::string one_line(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    else out += c;
  }
  return out;
}

}  // namespace

std::pair<std::string, std::string> mark_difference(const std::string& a, const std::string& b) {
  if (a == b) return {a, b};
  size_t pre = 0;
  while (pre < a.size() && pre < b.size() && a[pre] == b[pre]) ++pre;
  while (pre > 0 && (continuation(a[pre]) || (pre < b.size() && continuation(b[pre])))) --pre;
  size_t suf = 0;
  while (suf < a.size() - pre && suf < b.size() - pre && a[a.size() - 1 - suf] == b[b.size() - 1 - suf]) ++suf;
  // The suffix starts on a character's first byte in both strings.
  while (suf > 0 && (continuation(a[a.size() - suf]) || continuation(b[b.size() - suf]))) --suf;
  auto mark = [&](const std::string& s) {
    return s.substr(0, pre) + kOpen + s.substr(pre, s.size() - pre - suf) + kClose + s.substr(s.size() - suf);
  };
  return {mark(a), mark(b)};
}

std::string format_tables(const EvalResults& r) {
  std::string out;
  if (!r.tasks.empty()) {
    out += fmt::format("{:<10} {:>6} {:>9} {:>14} {:>12} {:>14} {:>10} {:>15}\n", "task", "turns", "negatives", "format-valid %",
                       "tool-valid %", "action match %", "refused %", "hallucination %");
    for (const auto& c : r.tasks)
      out += fmt::format("{:<10} {:>6} {:>9} {:>14} {:>12} {:>14} {:>10} {:>15}\n", task_name(c.task), c.positives,
                         c.negatives, percent(c.format_valid, c.positives), percent(c.tool_valid, c.tool_checked),
                         percent(c.action_match, c.positives), percent(c.refused, c.positives),
                         percent(c.hallucinated, c.negatives));
    if (r.skipped_too_long > 0)
      out += fmt::format("({} turns left out: their prompt plus max_new_tokens exceed the model's context)\n",
                         r.skipped_too_long);
  }
  if (!r.losses.empty()) {
    out += fmt::format("\n{:<12} {:<24} {:>10} {:>10}\n", "held-out", "name", "loss", "tokens");
    for (const auto& l : r.losses) out += fmt::format("{:<12} {:<24} {:>10.4f} {:>10}\n", l.group, l.name, l.loss, l.tokens);
  }
  if (!r.choices.empty()) {
    out += fmt::format("\n{:<24} {:>10} {:>8} {:>10}\n", "multiple choice", "questions", "acc %", "acc_norm %");
    for (const auto& c : r.choices)
      out += fmt::format("{:<24} {:>10} {:>8.1f} {:>10.1f}\n", c.name, c.questions, 100 * c.acc, 100 * c.acc_norm);
  }
  return out;
}

nlohmann::json results_json(const EvalResults& r, int64_t failures) {
  nlohmann::json j;
  j["tasks"] = nlohmann::json::array();
  for (const auto& c : r.tasks)
    j["tasks"].push_back({{"task", task_name(c.task)},
                          {"turns", c.positives},
                          {"negatives", c.negatives},
                          {"format_valid", share(c.format_valid, c.positives)},
                          {"tool_valid", share(c.tool_valid, c.tool_checked)},
                          {"action_match", share(c.action_match, c.positives)},
                          {"refused", share(c.refused, c.positives)},
                          {"hallucination", share(c.hallucinated, c.negatives)}});
  j["skipped_too_long"] = r.skipped_too_long;
  j["heldout_loss"] = nlohmann::json::array();
  for (const auto& l : r.losses)
    j["heldout_loss"].push_back({{"group", l.group}, {"name", l.name}, {"loss", l.loss}, {"tokens", l.tokens}});
  j["multiple_choice"] = nlohmann::json::array();
  for (const auto& c : r.choices)
    j["multiple_choice"].push_back(
        {{"name", c.name}, {"questions", c.questions}, {"acc", c.acc}, {"acc_norm", c.acc_norm}});
  if (failures > 0) {
    j["failures"] = nlohmann::json::array();
    for (const auto& t : r.turns) {
      if (!failed(t)) continue;
      if (static_cast<int64_t>(j["failures"].size()) >= failures) break;
      j["failures"].push_back({{"record", t.record_id},
                               {"turn", t.turn},
                               {"task", task_name(t.task)},
                               {"negative", t.negative},
                               {"last_turn", t.last_turn},
                               {"reply", t.reply},
                               {"reply_action", t.score.reply_action},
                               {"gold_action", t.score.gold_action},
                               {"why", t.score.why}});
    }
  }
  return j;
}

std::string format_turns(const EvalResults& r, int64_t n, bool failed_only) {
  std::string out;
  int64_t shown = 0;
  for (const auto& t : r.turns) {
    if (shown >= n) break;
    if (failed_only && !failed(t)) continue;
    ++shown;
    const std::string verdict = !failed(t) ? "passed" : t.negative ? "the reply calls a tool" : t.score.why;
    out += fmt::format("-- {} turn {} ({}{}): {}\n", t.record_id, t.turn, task_name(t.task),
                       t.negative ? ", negative" : "", verdict);
    out += fmt::format("   last turn:    {}\n", one_line(t.last_turn));
    out += fmt::format("   reply:        {}\n", one_line(t.reply));
    const auto [reply, gold] = mark_difference(one_line(t.score.reply_action), one_line(t.score.gold_action));
    out += fmt::format("   reply action: {}\n", reply);
    out += fmt::format("   gold action:  {}\n", gold);
  }
  if (shown == 0) out += failed_only ? "no failed turns\n" : "no scored turns\n";
  return out;
}

}  // namespace agenttune::eval
