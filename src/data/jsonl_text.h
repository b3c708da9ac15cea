#pragma once
// One JSONL record -> the document text, with errors a user can act on. simdjson's DOM parser does
// the work: bench/json_parse.cpp measured it several times faster than nlohmann/json on JSONL
// (README figures), and unlike its On-Demand API it validates the whole record, so a truncated
// line is an error rather than a silently accepted prefix.
#include <simdjson.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace agenttune::data {

enum class RecordStatus : uint8_t { Ok, Empty, Bad, Blank };

// simdjson reads up to this many bytes past a record's end; batches keep that much slack.
inline constexpr size_t kJsonPadding = simdjson::SIMDJSON_PADDING;

class JsonlTextExtractor {
 public:
  explicit JsonlTextExtractor(std::string field) : field_(std::move(field)) {}
  // `line` must be followed by kJsonPadding readable bytes. Ok: `text` views the parser's copy
  // (valid until the next call). Bad: `error` says what, without the FILE:LINE prefix. Blank:
  // a whitespace-only line, not a record. Empty: the text has no non-whitespace character.
  RecordStatus extract(std::string_view line, std::string_view& text, std::string& error);

 private:
  std::string field_;
  simdjson::dom::parser parser_;
};

// Plain-text documents: Ok, Empty or Bad (invalid UTF-8 at byte N).
RecordStatus check_text(std::string_view text, std::string& error);

bool is_blank(std::string_view s);

}  // namespace agenttune::data
