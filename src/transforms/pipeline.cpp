#include "agenttune/transforms/transforms.h"
#include "agenttune/util/error.h"
#include "internal.h"

namespace agenttune {
namespace transforms_detail {
namespace {

void check_share(double v, const std::string& where, const char* key) {
  if (!(v >= 0.0 && v <= 1.0)) fail("{}.{} must be between 0 and 1, got {}", where, key, v);
}
void check_phrasings(const std::vector<std::string>& v, const std::string& where, const char* key) {
  if (v.empty()) fail("{}.{} needs at least one phrasing", where, key);
}

}  // namespace

void validate_align(const AlignConfig& c, const std::string& where) {
  check_share(c.keep_react_fraction, where, "keep_react_fraction");
  check_phrasings(c.tool_elicits, where, "tool_elicits");
  check_phrasings(c.action_elicits, where, "action_elicits");
  check_phrasings(c.argument_elicits, where, "argument_elicits");
  check_phrasings(c.answer_elicits, where, "answer_elicits");
}

void validate_balance(const BalanceConfig& c, const std::string& where) {
  const std::string w = where + ".weights";
  check_share(c.weights.reasoning, w, "reasoning");
  check_share(c.weights.retrieval, w, "retrieval");
  check_share(c.weights.understanding, w, "understanding");
  check_share(c.weights.instruction_following, w, "instruction_following");
}

void validate_format(const FormatFollowingConfig& c, const std::string& where) {
  if (c.samples < 0) fail("{}.samples must not be negative, got {}", where, c.samples);
  check_share(c.json_fraction, where, "json_fraction");
  check_phrasings(c.json_requests, where, "json_requests");
  check_phrasings(c.string_requests, where, "string_requests");
}

void validate_negatives(const NegativesConfig& c, const std::string& where) {
  check_share(c.with_tools_fraction, where, "with_tools_fraction");
  if (c.max_tools < 1) fail("{}.max_tools must be at least 1, got {}", where, c.max_tools);
}

}  // namespace transforms_detail

void validate(const TransformConfig& c, const std::string& where) {
  using namespace transforms_detail;
  if (c.align.enabled) validate_align(c.align, where + ".align");
  if (c.balance.enabled) validate_balance(c.balance, where + ".balance");
  if (c.format_following.enabled) validate_format(c.format_following, where + ".format_following");
  if (c.negatives.enabled) validate_negatives(c.negatives, where + ".negatives");
}

std::vector<Conversation> apply_transforms(std::vector<Conversation> convs,
                                           const TransformConfig& config,
                                           TransformReports& reports) {
  validate(config);
  std::vector<Conversation> format, negatives;
  if (config.format_following.enabled)
    format = make_format_samples(convs, config.format_following, reports.format_following);
  if (config.negatives.enabled)
    negatives = make_negative_samples(convs, config.negatives, reports.negatives);
  if (config.align.enabled) convs = align_to_chat(std::move(convs), config.align, reports.align);
  for (auto& c : format) convs.push_back(std::move(c));
  if (config.balance.enabled) balance_capabilities(convs, config.balance, reports.balance);
  for (auto& c : negatives) convs.push_back(std::move(c));
  return convs;
}

}  // namespace agenttune
