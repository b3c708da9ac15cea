// OpenAI chat fine-tuning JSONL: {messages: [{role: system|user|assistant|tool, content}]}.
// Per-message `weight` 0/1 (OpenAI's way to skip an assistant turn) and our own `loss` bool are
// both accepted; they must agree when both are given.
#include <fmt/format.h>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {
std::optional<bool> openai_loss(const nlohmann::json& turn, const std::string& path,
                                const Where& where) {
  auto loss = read_bool_or_null(turn, "loss", path, where);
  auto it = turn.find("weight");
  if (it == turn.end() || it->is_null()) return loss;
  std::optional<bool> weight;
  if (it->is_number() && (it->get<double>() == 0.0 || it->get<double>() == 1.0))
    weight = it->get<double>() == 1.0;
  if (!weight)
    record_issue("bad_type", where.field_msg(path + ".weight",
                                             fmt::format("expected 0 or 1, got {}", it->dump())));
  if (loss && *loss != *weight)
    record_issue("bad_type",
                 where.field_msg(path + ".weight", fmt::format("weight {} disagrees with loss {}",
                                                               it->dump(), *loss)));
  return weight;
}
}  // namespace

const Schema& openai_schema() {
  static const Schema s{DatasetFormat::OpenAI,
                        "messages",
                        "role",
                        "content",
                        {{"system", Role::System},
                         {"user", Role::User},
                         {"assistant", Role::Assistant},
                         {"tool", Role::Tool}},
                        openai_loss,
                        {}};
  return s;
}

}  // namespace agenttune::readers
