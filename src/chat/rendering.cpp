#include "rendering.h"

#include <fmt/format.h>

#include <utility>

#include "agenttune/util/error.h"

namespace agenttune::chat_detail {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // "▁", SentencePiece's escaped space

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the UTF-8 character at s[pos]; returns its length (1 for a malformed byte, which is
// never whitespace, so strip leaves it alone as Python would leave the replacement character).
size_t decode_at(std::string_view s, size_t pos, char32_t& c) {
  auto b = static_cast<unsigned char>(s[pos]);
  size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || pos + n > s.size()) {
    c = 0xFFFD;
    return 1;
  }
  c = n == 1 ? b : b & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) c = (c << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3F);
  return n;
}

// Byte span [begin, end) of each token of `ids` = tok.encode_as_text(text), found by walking the
// pieces along the text. Llama-2's normalizer is the identity except for the dummy prefix and
// " " -> "▁", so the walk is exact; anything else (a normalizing model, an <unk>, a control or
// added token, which encode_as_text never gives) is an error, not a guess.
void token_spans(const Tokenizer& tok, std::string_view text, const std::vector<int32_t>& ids,
                 const std::string& tmpl, std::vector<std::pair<size_t, size_t>>& spans) {
  spans.clear();
  size_t pos = 0;
  bool dummy_prefix = true;
  auto misaligned = [&](int32_t id) {
    fail("chat template {}: cannot align token {} ('{}') with the text at byte {} of {:?}; the "
         "tokenizer must be Llama-2's SentencePiece model (identity normalizer, byte fallback)",
         tmpl, id, tok.id_to_piece(id), pos, std::string(text.substr(0, 200)));
  };
  for (int32_t id : ids) {
    size_t begin = pos;
    const std::string_view piece = tok.piece_view(id);
    if (id >= tok.base_vocab_size() || id == tok.bos_id() || id == tok.eos_id()) misaligned(id);
    if (piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>') {
      auto byte = static_cast<char>(std::stoi(std::string(piece.substr(3, 2)), nullptr, 16));
      if (pos >= text.size() || text[pos] != byte) misaligned(id);
      ++pos;
    } else if (id == tok.unk_id()) {
      misaligned(id);
    } else {
      for (size_t i = 0; i < piece.size();) {
        if (piece.substr(i, 3) == kSpaceMark) {
          i += 3;
          if (dummy_prefix) {
            dummy_prefix = false;
          } else if (pos < text.size() && text[pos] == ' ') {
            pos += 1;
          } else if (text.substr(pos, 3) == kSpaceMark) {
            pos += 3;
          } else {
            misaligned(id);
          }
          continue;
        }
        if (pos >= text.size() || text[pos] != piece[i]) misaligned(id);
        ++pos, ++i;
      }
    }
    dummy_prefix = false;
    spans.emplace_back(begin, pos);
  }
  if (pos != text.size()) misaligned(ids.empty() ? -1 : ids.back());
  // A lone dummy-prefix "▁" covers no byte; it belongs to the character that follows it.
  for (auto& [b, e] : spans)
    if (b == e && e < text.size()) e = b + 1;
}

// The same for a byte-level BPE tokenizer (Llama-3, Qwen): every token stands for exact bytes, with
// nothing prepended, so each span is the next run of the token's bytes; a token whose bytes are
// not the text's there is an error.
void byte_level_spans(const Tokenizer& tok, std::string_view text, const std::vector<int32_t>& ids,
                      const std::string& tmpl, std::vector<std::pair<size_t, size_t>>& spans) {
  spans.clear();
  size_t pos = 0;
  for (int32_t id : ids) {
    const bool base = id < tok.base_vocab_size();  // encode_as_text gives no added token
    const std::string bytes = base ? tok.token_bytes(id) : std::string();
    if (!base || text.substr(pos, bytes.size()) != bytes)
      fail("chat template {}: cannot align token {} ('{}') with the text at byte {} of {:?}", tmpl, id,
           tok.id_to_piece(id), pos, std::string(text.substr(0, 200)));
    spans.emplace_back(pos, pos + bytes.size());
    pos += bytes.size();
  }
  if (pos != text.size())
    fail("chat template {}: the tokens of {:?} cover {} of its {} bytes", tmpl, std::string(text.substr(0, 200)),
         pos, text.size());
}

}  // namespace

void Rendering::text(std::string_view s, bool trained) {
  if (s.empty()) return;
  if (!parts_.empty() && !parts_.back().special && parts_.back().trained == trained)
    parts_.back().text += s;
  else
    parts_.push_back({std::string(s), trained, false});
}

void Rendering::special(std::string_view token, bool trained) {
  parts_.push_back({std::string(token), trained, true});
}

std::string Rendering::str() const {
  std::string out;
  for (const auto& p : parts_) out += p.text;
  return out;
}

RenderedSample Rendering::encode(const Tokenizer& tok) const {
  RenderedSample out;
  // Scratch reused across stretches: the stretch text, its ids and their byte spans.
  std::string stretch;
  std::vector<int32_t> ids;
  std::vector<std::pair<size_t, size_t>> spans;
  std::vector<std::pair<size_t, bool>> ends;  // (end byte, trained) per part
  size_t i = 0;
  while (i < parts_.size()) {
    if (parts_[i].special) {
      const auto& t = parts_[i].text;
      std::optional<int32_t> id = t == "<s>" ? tok.bos_id() : t == "</s>" ? tok.eos_id() : tok.piece_to_id(t);
      if (id && *id < 0)  // prepare_tokenizer refuses such a pair first
        fail("chat template {}: tokenizer {} has no {} token", template_, tok.model_path().string(),
             t == "<s>" ? "BOS <s>" : "EOS </s>");
      if (!id)
        fail("chat template {}: the tokenizer has no token {}; add the template's tokens first "
             "(prepare_tokenizer)", template_, t);
      out.ids.push_back(*id);
      out.trained.push_back(parts_[i].trained);
      ++i;
      continue;
    }
    // One stretch: consecutive text parts, tokenized as one string.
    stretch.clear();
    ends.clear();
    for (; i < parts_.size() && !parts_[i].special; ++i) {
      stretch += parts_[i].text;
      ends.emplace_back(stretch.size(), parts_[i].trained);
    }
    ids.clear();
    // As text: content that spells "<|im_end|>" or "</s>" must not become a control token (a
    // user turn could otherwise open a fake, trained assistant turn); only special() inserts them.
    tok.encode_as_text(stretch, ids);
    if (tok.byte_level())
      byte_level_spans(tok, stretch, ids, template_, spans);
    else
      token_spans(tok, stretch, ids, template_, spans);
    size_t k = 0;  // first part whose end is past the token's begin
    for (size_t t = 0; t < ids.size(); ++t) {
      auto [b, e] = spans[t];
      while (k < ends.size() && ends[k].first <= b) ++k;
      bool trained = false;
      for (size_t j = k; j < ends.size(); ++j) {
        trained |= ends[j].second;
        if (ends[j].first >= e) break;
      }
      out.ids.push_back(ids[t]);
      out.trained.push_back(trained);
    }
  }
  return out;
}

void chatml_turn(Rendering& r, std::string_view role, std::string_view content, bool trained, bool newline_trained) {
  r.special("<|im_start|>");
  r.text(std::string(role) + "\n");
  r.text(content, trained);
  r.special("<|im_end|>", trained);
  r.text("\n", trained && newline_trained);
}

void chatml_open(Rendering& r) {
  r.special("<|im_start|>");
  r.text("assistant\n");
}

std::string py_strip(std::string_view s) {
  size_t b = 0, e = s.size();
  char32_t c;
  while (b < e) {
    size_t n = decode_at(s, b, c);
    if (!py_isspace(c)) break;
    b += n;
  }
  while (e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    decode_at(s, start, c);
    if (!py_isspace(c)) break;
    e = start;
  }
  return std::string(s.substr(b, e - b));
}

std::string jinja_literal(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out + "'";
}

std::string where(const Conversation& conv) {
  return fmt::format("{} record {} (id {})", conv.source.empty() ? conv.file : conv.source,
                     conv.record, conv.id.empty() ? "?" : conv.id);
}

}  // namespace agenttune::chat_detail
