#include "token_view.h"

#include <fmt/format.h>

#include <algorithm>

namespace agenttune::cli {

namespace {

constexpr const char* kReset = "\x1b[0m";
constexpr const char* kTrained = "\x1b[1;32m";  // bold green
constexpr const char* kContext = "\x1b[2m";     // dim
constexpr const char* kSpecial = "\x1b[36m";    // cyan (added on top of the span's colour)
constexpr const char* kTrainOpen = "⟦";
constexpr const char* kTrainClose = "⟧";
constexpr const char* kBoundary = "║";

// "<0x0A>" -> 0x0A; -1 when the piece is not a byte-fallback piece.
int byte_piece(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  try {
    return std::stoi(p.substr(3, 2), nullptr, 16);
  } catch (const std::exception&) {
    return -1;
  }
}

bool is_special(const Tokenizer& tok, int32_t id) {
  return id == tok.bos_id() || id == tok.eos_id() || id == tok.unk_id() || id >= tok.base_vocab_size();
}

std::string piece_text(const Tokenizer& tok, int32_t id) {
  if (id < 0 || id >= tok.vocab_size()) return fmt::format("<id {}?>", id);
  std::string p = tok.id_to_piece(id);
  if (is_special(tok, id)) return p;
  // Byte-level BPE (a tokenizer.json; Llama-3, Qwen): the token's bytes, not its GPT-2 byte-mapped
  // spelling ("Ġhello", "Ċ"); consecutive tokens of one character join back into it.
  if (tok.byte_level()) return tok.token_bytes(id);
  if (int b = byte_piece(p); b >= 0) return std::string(1, static_cast<char>(b));
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581, SentencePiece's space
      out += ' ';
      i += 3;
    } else {
      out += p[i++];
    }
  }
  return out;
}

}  // namespace

std::string render_tokens(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::vector<TokenMark>& marks,
                          const TokenViewStyle& style, const std::vector<size_t>& boundaries) {
  std::string out;
  bool open = false;   // plain style: inside ⟦ ⟧
  std::string color;   // colour style: the codes in effect
  auto close = [&] {
    if (open) out += kTrainClose;
    open = false;
    if (!color.empty()) out += kReset, color.clear();
  };
  size_t next_boundary = 0;
  for (size_t i = 0; i < ids.size();) {
    while (next_boundary < boundaries.size() && boundaries[next_boundary] < i) ++next_boundary;
    if (next_boundary < boundaries.size() && boundaries[next_boundary] == i && i > 0) {
      close();
      out += style.color ? fmt::format("\x1b[1;35m{}{}", kBoundary, kReset) : kBoundary;
    }
    const TokenMark m = marks[i];
    if (m == TokenMark::Padding) {
      size_t j = i;
      while (j < ids.size() && marks[j] == TokenMark::Padding) ++j;
      close();
      out += style.color ? fmt::format("{}[+{} pad]{}", kContext, j - i, kReset) : fmt::format("[+{} pad]", j - i);
      i = j;
      continue;
    }
    const bool trained = m == TokenMark::Trained;
    const bool special = is_special(tok, ids[i]);
    const std::string text = piece_text(tok, ids[i]);
    if (style.color) {
      // A code only where the class changes, so the output stays small enough to page through.
      std::string code = std::string(trained ? kTrained : kContext) + (special ? kSpecial : "");
      if (code != color) out += kReset + code, color = code;
      out += text;
    } else {
      if (trained && !open) out += kTrainOpen, open = true;
      if (!trained) close();
      out += text;
    }
    ++i;
  }
  close();
  return out;
}

std::string token_view_legend(const TokenViewStyle& style) {
  if (style.color)
    return fmt::format("legend: {}trained{}  {}context (no loss){}  {}{}special{}  {}{}{} document start", kTrained,
                       kReset, kContext, kReset, kContext, kSpecial, kReset, "\x1b[1;35m", kBoundary, kReset);
  return fmt::format("legend: {}trained{}  context (no loss)  {} document start  [+N pad] padding", kTrainOpen,
                     kTrainClose, kBoundary);
}

}  // namespace agenttune::cli
