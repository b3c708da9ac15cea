#pragma once
// What a person reads from an eval: a table per task (format-valid %, tool-valid %, action match %,
// refused %, hallucination %), the held-out loss per source and capability, the multiple-choice
// accuracies; the same as JSON; and the failures, each with the prompt's last turn, the reply and
// the gold action, the span where reply and gold differ marked ⟦ ⟧ as `inspect --plain` marks.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "agenttune/eval/eval_run.h"

namespace agenttune::eval {

std::string format_tables(const EvalResults& r);

// `failures`: the first this many failed turns go in "failures" (with their replies).
nlohmann::json results_json(const EvalResults& r, int64_t failures = 0);

// The first `n` scored turns in record order, or with `failed_only` the first `n` failed ones: a
// positive whose action differs from the gold one, or a negative whose reply calls a tool.
std::string format_turns(const EvalResults& r, int64_t n, bool failed_only);

// `a` and `b` with the span between their common prefix and common suffix (whole UTF-8
// characters) put between ⟦ and ⟧; equal strings come back unmarked.
std::pair<std::string, std::string> mark_difference(const std::string& a, const std::string& b);

}  // namespace agenttune::eval
