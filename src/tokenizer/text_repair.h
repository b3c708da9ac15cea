#pragma once
// Internal to the tokenizer area: text made what `tokenizers` would see, before pre-tokenizing.
#include <string>
#include <string_view>

namespace agenttune::tokenizer_detail {

// Appends `s` with each maximal invalid UTF-8 subpart replaced by U+FFFD, exactly as Python's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do.
void append_utf8_lossy(std::string_view s, std::string& out);

// Unicode NFC through utf8proc into `out`. Returns false, leaving `out` alone, when no character of
// `s` (valid UTF-8) can change: the common case costs a scan, not a copy.
bool nfc_if_needed(std::string_view s, std::string& out);

}  // namespace agenttune::tokenizer_detail
