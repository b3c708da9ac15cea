#pragma once
// Internal to src/chat: JSON printed the way the published chat templates print it. Their `tojson`
// filter is transformers' json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=False) of the
// objects a caller passed (tool schemas, call arguments), so the tokens a model is trained on
// depend on Python's formatting: ", " and ": " separators, non-ASCII kept, floats as repr() writes
// them, keys in the data's order.
#include <string>
#include <string_view>

namespace agenttune::chat_detail {

// `json_text` (one JSON object) as Python's json.dumps writes it after json.loads; indent < 0 is
// Python's indent=None. Throws agenttune::Error starting with `what` when the text is not a JSON
// object, has a duplicate key (json.loads would keep only the last value), a lone surrogate or a number
// beyond double's range (Python would print Infinity).
std::string py_tojson(std::string_view json_text, int indent, std::string_view what);

}  // namespace agenttune::chat_detail
