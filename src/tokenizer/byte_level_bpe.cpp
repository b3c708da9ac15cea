#include "byte_level_bpe.h"

#include <queue>

#include "agenttune/util/error.h"
#include "agenttune/util/utf8.h"
#include "text_repair.h"

namespace agenttune::tokenizer_detail {

namespace {

using nlohmann::json;

// GPT-2's bytes_to_unicode, inverted: code point of a vocabulary character -> the byte it stands for
// (-1: not a byte-level character). Printable Latin-1 bytes stand for themselves; the other 68, in
// increasing order, are U+0100, U+0101, ...
const std::array<int, 324>& byte_of_char() {
  static const std::array<int, 324> table = [] {
    std::array<int, 324> t;
    t.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[printable ? b : next++] = b;
    }
    return t;
  }();
  return table;
}

const json& member(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("{}: expected a \"{}\" entry", where, key);
  return j.at(key);
}

// A component's "type" ("" for a null or any non-object), so that a file with `"decoder": null` or
// a stray entry gets the error naming it rather than nlohmann's "cannot use value() with null".
std::string type_of(const json& j) { return j.is_object() ? j.value("type", "") : ""; }

bool null_or(const json& j, const char* key, const json& allowed) {
  return !j.contains(key) || j.at(key).is_null() || j.at(key) == allowed;
}

// The Split regex of Sequence[Split, ByteLevel] (Llama-3, Qwen). GPT-2's own form (a ByteLevel with
// use_regex and its built-in regex) is refused: no file of that kind is checked here.
std::string split_pattern(const json& pre, const std::string& where) {
  if (type_of(pre) == "Sequence") {
    const json& steps = member(pre, "pretokenizers", where);
    const json& last = steps.empty() ? json() : steps.back();
    if (steps.size() == 2 && type_of(last) == "ByteLevel" && !last.value("add_prefix_space", false) &&
        !last.value("use_regex", true)) {
      const json& split = steps[0];
      if (type_of(split) == "Split" && split.value("behavior", "") == "Isolated" &&
          !split.value("invert", false) && split.contains("pattern") && split["pattern"].contains("Regex"))
        return split["pattern"]["Regex"].get<std::string>();
    }
  }
  fail("{}: pre_tokenizer {} is not supported: byte-level BPE here takes Sequence[Split(Regex, Isolated), "
       "ByteLevel(add_prefix_space false, use_regex false)], as Llama-3 and Qwen2 have",
       where, pre.dump().substr(0, 300));
}

// The token the post-processor puts before a single sequence ("" for none).
std::string post_processor_prefix(const json& post, const std::string& where) {
  if (post.is_null()) return "";
  const std::string type = type_of(post);
  if (type == "ByteLevel") return "";
  if (type == "Sequence") {
    std::string prefix;
    for (const json& p : member(post, "processors", where)) {
      const std::string one = post_processor_prefix(p, where);
      if (!one.empty()) prefix = one;
    }
    return prefix;
  }
  if (type == "TemplateProcessing") {
    std::string prefix;
    bool seen_a = false;
    for (const json& item : member(post, "single", where)) {
      if (item.contains("Sequence")) {
        seen_a = true;
      } else if (item.contains("SpecialToken") && !seen_a && prefix.empty()) {
        prefix = item["SpecialToken"].value("id", "");
      } else {
        fail("{}: post_processor TemplateProcessing {} is not supported: only one special token before $A",
             where, item.dump());
      }
    }
    return prefix;
  }
  fail("{}: post_processor type \"{}\" is not supported (ByteLevel, TemplateProcessing, Sequence of them)",
       where, type);
}

}  // namespace

bool ByteLevelBpe::unmap(std::string_view piece, std::string& out) {
  for (size_t i = 0; i < piece.size();) {
    const auto c = static_cast<unsigned char>(piece[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0xC0 && c < 0xE0 && i + 1 < piece.size()) cp = (c & 0x1Fu) << 6 | (piece[i + 1] & 0x3F), len = 2;
    else if (c >= 0x80) return false;
    const int b = cp < byte_of_char().size() ? byte_of_char()[cp] : -1;
    if (b < 0) return false;
    out += static_cast<char>(b);
    i += len;
  }
  return true;
}

bool ByteLevelBpe::is_byte_level(const json& j) {
  if (!j.is_object() || !j.contains("model") || type_of(j["model"]) != "BPE") return false;
  const json& pre = j.value("pre_tokenizer", json());
  if (type_of(pre) == "ByteLevel") return true;
  if (pre.is_object() && pre.contains("pretokenizers"))
    for (const json& p : pre["pretokenizers"])
      if (type_of(p) == "ByteLevel") return true;
  return false;
}

std::shared_ptr<const ByteLevelBpe> ByteLevelBpe::from_json(const json& j, const std::string& where) {
  if (!is_byte_level(j)) fail("{}: not a byte-level BPE tokenizer.json (model BPE, pre_tokenizer ByteLevel)", where);
  const json& model = j["model"];
  if (!null_or(model, "dropout", json()) || model.value("byte_fallback", false) ||
      !null_or(model, "continuing_subword_prefix", "") || !null_or(model, "end_of_word_suffix", ""))
    fail("{}: BPE options dropout, byte_fallback, continuing_subword_prefix and end_of_word_suffix are not "
         "supported in byte-level BPE",
         where);
  const json& norm = j.value("normalizer", json());
  if (!norm.is_null() && type_of(norm) != "NFC")
    fail("{}: normalizer {} is not supported (none or NFC)", where, norm.dump().substr(0, 200));
  const json& dec = j.value("decoder", json());
  if (type_of(dec) != "ByteLevel")
    fail("{}: decoder {} is not supported (ByteLevel)", where, dec.dump().substr(0, 200));

  auto bpe = std::shared_ptr<ByteLevelBpe>(new ByteLevelBpe());
  bpe->nfc_ = !norm.is_null();
  bpe->ignore_merges_ = model.value("ignore_merges", false);
  bpe->split_ = std::make_unique<SplitRegex>(split_pattern(j["pre_tokenizer"], where), where);
  bpe->prefix_ = post_processor_prefix(j.value("post_processor", json()), where);

  const json& vocab = member(model, "vocab", where);
  bpe->pieces_.resize(vocab.size());
  for (const auto& [piece, id_json] : vocab.items()) {
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(vocab.size()) || !bpe->pieces_[id].empty())
      fail("{}: vocabulary ids must be 0..{} each once; \"{}\" has {}", where, vocab.size() - 1, piece, id);
    bpe->pieces_[id] = piece;
  }
  bpe->bytes_.reserve(bpe->pieces_.size());
  for (const auto& p : bpe->pieces_) {
    if (!unmap(p, bpe->bytes_.emplace_back()))
      fail("{}: vocabulary entry \"{}\" is not GPT-2 byte-level text (a ByteLevel BPE needs every entry to be)",
           where, p);
  }
  bpe->byte_ids_.fill(-1);
  for (int32_t id = 0; id < bpe->size(); ++id) {
    bpe->by_piece_.emplace(bpe->pieces_[id], id);
    bpe->by_bytes_.emplace(bpe->bytes_[id], id);
    if (bpe->bytes_[id].size() == 1) bpe->byte_ids_[static_cast<unsigned char>(bpe->bytes_[id][0])] = id;
  }
  for (int b = 0; b < 256; ++b)
    if (bpe->byte_ids_[b] < 0) fail("{}: byte 0x{:02X} has no vocabulary entry", where, b);

  const json& merges = member(model, "merges", where);
  bpe->merges_.reserve(merges.size());
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    if (m.is_array() && m.size() == 2) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      const std::string s = m.get<std::string>();  // the legacy "a b" form
      const size_t space = s.find(' ');
      if (space == std::string::npos) fail("{}: merge {} (\"{}\") is not a pair", where, rank, s);
      left = s.substr(0, space), right = s.substr(space + 1);
    }
    const auto a = bpe->by_piece_.find(left), b = bpe->by_piece_.find(right), ab = bpe->by_piece_.find(left + right);
    if (a == bpe->by_piece_.end() || b == bpe->by_piece_.end() || ab == bpe->by_piece_.end())
      fail("{}: merge {} (\"{}\" \"{}\") names a token that is not in the vocabulary", where, rank, left, right);
    // A pair listed twice keeps its last rank, as tokenizers' HashMap collect does.
    bpe->merges_.insert_or_assign(uint64_t(uint32_t(a->second)) << 32 | uint32_t(b->second),
                                  Merge{static_cast<int32_t>(rank), ab->second});
  }
  return bpe;
}

std::unique_ptr<ByteLevelBpe::Scratch> ByteLevelBpe::borrow() const {
  {
    std::lock_guard lock(pool_mu_);
    if (!pool_.empty()) {
      auto s = std::move(pool_.back());
      pool_.pop_back();
      return s;
    }
  }
  return std::make_unique<Scratch>();
}

void ByteLevelBpe::give_back(std::unique_ptr<Scratch> s) const {
  std::lock_guard lock(pool_mu_);
  pool_.push_back(std::move(s));
}

void ByteLevelBpe::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  auto s = borrow();
  std::string_view t = text;
  if (first_invalid_utf8(t) != std::string_view::npos) {
    s->repaired.clear();
    append_utf8_lossy(t, s->repaired);
    t = s->repaired;
  }
  if (nfc_ && nfc_if_needed(t, s->normalized)) t = s->normalized;
  split_->split(t, s->match, [&](std::string_view piece) { encode_piece(piece, out, *s); });
  give_back(std::move(s));
}

void ByteLevelBpe::encode_piece(std::string_view piece, std::vector<int32_t>& out, Scratch& s) const {
  constexpr size_t kCachedPiece = 64;
  uint32_t n = 0;
  if (piece.size() <= kCachedPiece) {
    if (const int32_t* ids = s.cache.find(piece, n)) {
      out.insert(out.end(), ids, ids + n);
      return;
    }
  }
  s.ids.clear();
  const auto whole = ignore_merges_ ? by_bytes_.find(piece) : by_bytes_.end();
  if (whole != by_bytes_.end()) s.ids.push_back(whole->second);
  else merge(piece, s.ids);
  out.insert(out.end(), s.ids.begin(), s.ids.end());
  if (piece.size() <= kCachedPiece) s.cache.add(piece, s.ids.data(), static_cast<uint32_t>(s.ids.size()));
}

// tokenizers' Word::merge_all: a min-heap of (rank, position) over adjacent pairs that have a merge;
// an entry is stale when its left symbol is gone or the pair there now merges into something else.
void ByteLevelBpe::merge(std::string_view w, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id;
    int prev, next;
    bool alive;
  };
  struct Cand {
    int32_t rank;
    int pos;
    int32_t id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int n = static_cast<int>(w.size());
  std::vector<Sym> sym(n);
  for (int i = 0; i < n; ++i) sym[i] = {byte_ids_[static_cast<unsigned char>(w[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  auto lookup = [&](int32_t a, int32_t b) -> const Merge* {
    const auto it = merges_.find(uint64_t(uint32_t(a)) << 32 | uint32_t(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  for (int i = 0; i + 1 < n; ++i)
    if (const Merge* m = lookup(sym[i].id, sym[i + 1].id)) heap.push({m->rank, i, m->id});
  while (!heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    Sym& s = sym[top.pos];
    if (!s.alive || s.next < 0) continue;
    const Merge* m = lookup(s.id, sym[s.next].id);
    if (m == nullptr || m->id != top.id) continue;
    Sym& r = sym[s.next];
    s.id = top.id;
    r.alive = false;
    s.next = r.next;
    if (s.next >= 0) sym[s.next].prev = top.pos;
    if (s.prev >= 0)
      if (const Merge* p = lookup(sym[s.prev].id, s.id)) heap.push({p->rank, s.prev, p->id});
    if (s.next >= 0)
      if (const Merge* q = lookup(s.id, sym[s.next].id)) heap.push({q->rank, top.pos, q->id});
  }
  for (int i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace agenttune::tokenizer_detail
