#pragma once
// Which tokenizer each chat template is made for. The Llama-2-era templates render on Llama-2's
// SentencePiece model (plus their added tokens); llama-3, qwen2.5 and qwen3 need their family's byte-level
// BPE tokenizer.json, whose control tokens they insert by id (rendering with another tokenizer is
// an error naming the missing token).
#include <string>
#include <vector>

namespace agenttune {

// The templates of template_names() made for Llama-2's SentencePiece tokenizer.
const std::vector<std::string>& sentencepiece_template_names();

// The templates of template_names() whose published form renders tool definitions
// (Conversation::tools) and structured calls (Turn::tool_calls); every other template refuses a
// conversation that has any.
const std::vector<std::string>& tool_template_names();

}  // namespace agenttune
