#pragma once
// How a multiple-choice question is put to the model (eval/likelihood.h). Torch-free: the eval
// config (and so the train config's `eval:` section) names it.
#include <array>
#include <string_view>
#include <utility>

#include "agenttune/config/scalars.h"

namespace agenttune::eval {

enum class ChoiceStyle {
  Letters,  // MMLU: "<question>\nA. <c0>\nB. <c1>...\nAnswer:", continuations " A", " B", ...
  Texts,    // ARC-style: "Question: <question>\nAnswer:", continuations " <choice text>"
};

}  // namespace agenttune::eval

template <>
struct agenttune::EnumNames<agenttune::eval::ChoiceStyle> {
  static constexpr std::array<std::pair<agenttune::eval::ChoiceStyle, std::string_view>, 2> values = {
      {{agenttune::eval::ChoiceStyle::Letters, "letters"}, {agenttune::eval::ChoiceStyle::Texts, "texts"}}};
};
