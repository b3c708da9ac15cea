#pragma once
// Token ids as readable text with the trained spans highlighted (`agenttune inspect`): what the
// model sees, piece by piece, so a wrong loss mask is visible at a glance.
#include <cstdint>
#include <string>
#include <vector>

#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune::cli {

enum class TokenMark : uint8_t { Context, Trained, Padding };

struct TokenViewStyle {
  bool color = false;  // ANSI colours; otherwise trained spans sit between ⟦ and ⟧
};

// ids[i] with marks[i]; `boundaries` lists indices where a new document starts inside a packed
// row (shown as ║). Special tokens print as their text (<s>, </s>, <|im_end|>); "▁" as a space;
// byte-fallback pieces as the bytes they stand for; a run of padding as "[+N pad]".
std::string render_tokens(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::vector<TokenMark>& marks,
                          const TokenViewStyle& style, const std::vector<size_t>& boundaries = {});

// The legend line for a style.
std::string token_view_legend(const TokenViewStyle& style);

}  // namespace agenttune::cli
