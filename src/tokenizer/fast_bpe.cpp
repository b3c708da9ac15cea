#include "fast_bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "agenttune/util/files.h"

namespace agenttune::tokenizer_detail {

namespace {

constexpr std::string_view kMark = "\xE2\x96\x81";  // "▁", SentencePiece's escaped space

// Just enough protobuf wire format to read sentencepiece_model.proto.
struct Wire {
  std::string_view s;
  size_t pos = 0;
  bool ok = true;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; pos < s.size() && shift < 64; shift += 7) {
      const auto b = static_cast<uint8_t>(s[pos++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return 0;
  }
  // Calls f(field, wire_type, varint value, bytes) for each field; false if malformed.
  template <typename F>
  bool each(F&& f) {
    while (ok && pos < s.size()) {
      const uint64_t key = varint();
      const int field = static_cast<int>(key >> 3), type = static_cast<int>(key & 7);
      uint64_t v = 0;
      std::string_view bytes;
      if (type == 0) v = varint();
      else if (type == 5 && pos + 4 <= s.size()) bytes = s.substr(pos, 4), pos += 4;
      else if (type == 1 && pos + 8 <= s.size()) bytes = s.substr(pos, 8), pos += 8;
      else if (type == 2) {
        const uint64_t n = varint();
        if (n > s.size() - pos) return false;
        bytes = s.substr(pos, n), pos += n;
      } else return false;
      f(field, type, v, bytes);
    }
    return ok;
  }
};

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Length of the UTF-8 character at s[i] as SentencePiece's DecodeUTF8 accepts it (no overlong
// forms, surrogates or code points past U+10FFFF), or 0 where SentencePiece would see U+FFFD.
size_t utf8_length(std::string_view s, size_t i) {
  const auto at = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const auto trail = [&](size_t k) { return (at(k) & 0xC0) == 0x80; };
  const size_t left = s.size() - i;
  const uint8_t c = at(0);
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return left >= 2 && trail(1) ? 2 : 0;
  if (c < 0xF0) {
    if (left < 3 || !trail(1) || !trail(2)) return 0;
    const uint32_t cp = (c & 0x0Fu) << 12 | (at(1) & 0x3Fu) << 6 | (at(2) & 0x3Fu);
    return cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000) ? 3 : 0;
  }
  if (c >= 0xF5 || left < 4 || !trail(1) || !trail(2) || !trail(3)) return 0;
  const uint32_t cp = (c & 0x07u) << 18 | (at(1) & 0x3Fu) << 12 | (at(2) & 0x3Fu) << 6 | (at(3) & 0x3Fu);
  return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
}

}  // namespace

std::shared_ptr<const FastBpe> FastBpe::load(const std::filesystem::path& model, std::string* why_not) {
  return from_proto(read_text_file(model), why_not);
}

std::shared_ptr<const FastBpe> FastBpe::from_proto(std::string_view proto, std::string* why_not) {
  auto bpe = std::shared_ptr<FastBpe>(new FastBpe());
  int model_type = 1, bytes_seen = 0;
  bool byte_fallback = false, suffix = false, dummy = true, extra_ws = true, escape = true, unk = false;
  std::string norm_name, charsmap, reason;
  std::fill(std::begin(bpe->byte_ids_), std::end(bpe->byte_ids_), -1);
  int32_t id = 0;
  std::vector<Piece> normal;  // parallel to storage_
  bool ok = Wire{proto}.each([&](int field, int, uint64_t, std::string_view b) {
    if (field == 1) {  // pieces
      std::string piece;
      float score = 0;
      int type = kNormal;
      Wire{b}.each([&](int f, int t, uint64_t v, std::string_view x) {
        if (f == 1) piece = x;
        else if (f == 2 && t == 5) std::memcpy(&score, x.data(), 4);
        else if (f == 3) type = static_cast<int>(v);
      });
      if (type == kUserDefined || type == kUnused) reason = "it has user-defined or unused pieces";
      if (type == kUnknown) unk = true;
      if (type == kByte && piece.size() == 6) {
        bpe->byte_ids_[std::stoi(piece.substr(3, 2), nullptr, 16) & 255] = id;
        ++bytes_seen;
      }
      if (type == kNormal) {
        for (size_t p = piece.find(kMark); p != std::string::npos; p = piece.find(kMark, p + 1))
          if (p > 0 && (p < kMark.size() || piece.compare(p - kMark.size(), kMark.size(), kMark) != 0))
            reason = "a piece has \"▁\" after another character, so merges can cross words";
        bpe->storage_.push_back(std::move(piece));
        normal.push_back({id, score});
      }
      ++id;
    } else if (field == 2) {  // trainer_spec
      Wire{b}.each([&](int f, int, uint64_t v, std::string_view) {
        if (f == 3) model_type = static_cast<int>(v);
        else if (f == 24) suffix = v != 0;
        else if (f == 35) byte_fallback = v != 0;
      });
    } else if (field == 3) {  // normalizer_spec
      Wire{b}.each([&](int f, int, uint64_t v, std::string_view x) {
        if (f == 1) norm_name = x;
        else if (f == 2) charsmap = x;
        else if (f == 3) dummy = v != 0;
        else if (f == 4) extra_ws = v != 0;
        else if (f == 5) escape = v != 0;
      });
    }
  });
  if (!ok) reason = "its proto could not be read";
  else if (model_type != 2) reason = "it is not a BPE model";
  else if (!byte_fallback || bytes_seen != 256 || !unk) reason = "it has no byte fallback";
  else if (suffix || !dummy || extra_ws || !escape || !charsmap.empty() || norm_name != "identity")
    reason = "its normalizer is not Llama's (identity, dummy prefix, escaped spaces)";
  if (!reason.empty()) {
    if (why_not) *why_not = reason;
    return nullptr;
  }
  // Keys view the strings now that storage_ no longer grows.
  for (size_t i = 0; i < normal.size(); ++i) bpe->pieces_.emplace(bpe->storage_[i], normal[i]);
  return bpe;
}

const FastBpe::Piece* FastBpe::find(std::string_view s) const {
  auto it = pieces_.find(s);
  return it == pieces_.end() ? nullptr : &it->second;
}

// SentencePiece's BPE (bpe_model.cc) on one segment: a max-heap of adjacent pairs whose union is
// a piece, by score then leftmost; stale entries are skipped when popped.
void FastBpe::bpe(std::string_view w, std::vector<int32_t>& out) const {
  struct Sym {
    int prev, next;
    uint32_t begin, len;
  };
  struct Pair {
    float score;
    int left, right;
    uint32_t len;
    bool operator<(const Pair& o) const { return score < o.score || (score == o.score && left > o.left); }
  };
  std::vector<Sym> sym;
  for (uint32_t i = 0; i < w.size();) {
    const auto c = static_cast<uint8_t>(w[i]);
    const uint32_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;  // input is valid UTF-8
    sym.push_back({static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1, i, std::min<uint32_t>(n, w.size() - i)});
    i += n;
  }
  sym.back().next = -1;
  std::priority_queue<Pair> heap;
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const uint32_t len = sym[l].len + sym[r].len;
    if (const Piece* p = find(w.substr(sym[l].begin, len))) heap.push({p->score, l, r, len});
  };
  for (size_t i = 1; i < sym.size(); ++i) consider(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!heap.empty()) {
    const Pair top = heap.top();
    heap.pop();
    Sym &l = sym[top.left], &r = sym[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.len || l.next != top.right) continue;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = top.left;
    r.len = 0;
    consider(l.prev, top.left);
    consider(top.left, l.next);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    const std::string_view piece = w.substr(sym[i].begin, sym[i].len);
    if (const Piece* p = find(piece)) {
      out.push_back(p->id);
    } else {
      for (char c : piece) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    }
  }
}

const int32_t* FastBpe::Cache::find(std::string_view word, uint32_t& n) const {
  if (word.size() <= sizeof(Slot::key)) {
    if (slots_.empty()) return nullptr;
    const uint64_t h = Hash{}(word), mask = slots_.size() - 1;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return nullptr;
      if (s.hash == h && s.key_len == word.size() && std::memcmp(s.key, word.data(), word.size()) == 0) {
        n = s.n;
        return s.ids;
      }
    }
  }
  auto it = map_.find(word);
  if (it == map_.end()) return nullptr;
  n = it->second.size;
  return ids_.data() + it->second.begin;
}

void FastBpe::Cache::add(std::string_view word, const int32_t* ids, uint32_t n) {
  constexpr size_t kMaxEntries = 1 << 17;  // bounded memory (~20 MB) on corpora of unique words
  if (word.empty()) return;
  if (word.size() > sizeof(Slot::key) || n > std::size(Slot{}.ids)) {
    if (map_.size() >= kMaxEntries) map_.clear(), ids_.clear();
    map_.emplace(std::string(word), Span{static_cast<uint32_t>(ids_.size()), n});
    ids_.insert(ids_.end(), ids, ids + n);
    return;
  }
  if (used_ >= kMaxEntries) slots_.clear(), used_ = 0;
  if (2 * (used_ + 1) > slots_.size()) {  // at most half full
    std::vector<Slot> old(std::max<size_t>(4096, 2 * slots_.size()), Slot{});
    old.swap(slots_);
    used_ = 0;
    for (const Slot& s : old)
      if (s.key_len) add({s.key, s.key_len}, s.ids, s.n);
  }
  const uint64_t h = Hash{}(word), mask = slots_.size() - 1;
  uint64_t i = h & mask;
  while (slots_[i].key_len) i = (i + 1) & mask;
  Slot& s = slots_[i];
  s.hash = h;
  s.key_len = static_cast<uint8_t>(word.size());
  s.n = static_cast<uint8_t>(n);
  std::memcpy(s.key, word.data(), word.size());
  std::copy(ids, ids + n, s.ids);
  ++used_;
}

void FastBpe::encode_word(std::string_view word, std::vector<int32_t>& out, Cache& cache) const {
  constexpr size_t kCachedWord = 64;
  uint32_t n = 0;
  if (word.size() <= kCachedWord) {
    if (const int32_t* ids = cache.find(word, n)) {
      out.insert(out.end(), ids, ids + n);
      return;
    }
  }
  std::string normalized;
  normalized.reserve(word.size() + 2 * kMark.size());
  for (char c : word) {
    if (c == ' ') normalized += kMark;
    else normalized += c;
  }
  auto& ids = cache.word_ids_;
  ids.clear();
  bpe(normalized, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() <= kCachedWord) cache.add(word, ids.data(), static_cast<uint32_t>(ids.size()));
}

// SentencePiece's normalizer here only prepends "▁" and maps " " to "▁", so words are cut from the
// raw text: a word starts where a run of spaces or "▁" follows another character, and the first
// word carries the dummy prefix (written as a space; encode_word maps spaces to "▁").
bool FastBpe::encode(std::string_view text, std::vector<int32_t>& out, Cache& cache) const {
  if (text.empty()) return true;
  const size_t before = out.size();
  size_t start = 0;
  bool after_mark = true;  // the dummy prefix
  auto emit = [&](size_t end) {
    if (start == 0) {
      cache.key_.assign(1, ' ');
      cache.key_.append(text.data(), end);
      encode_word(cache.key_, out, cache);
    } else {
      encode_word(text.substr(start, end - start), out, cache);
    }
    start = end;
  };
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<uint8_t>(text[i]);
    size_t len = 1;
    bool mark = c == ' ';
    if (c >= 0x80) {
      len = utf8_length(text, i);
      if (len == 0) {
        out.resize(before);
        return false;
      }
      mark = len == 3 && text.compare(i, 3, kMark) == 0;
    }
    if (mark && !after_mark) emit(i);
    after_mark = mark;
    i += len;
  }
  emit(text.size());
  return true;
}

bool FastBpe::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::unique_ptr<Cache> cache;
  {
    std::lock_guard lock(pool_mu_);
    if (!pool_.empty()) cache = std::move(pool_.back()), pool_.pop_back();
  }
  if (!cache) cache = std::make_unique<Cache>();
  const bool ok = encode(text, out, *cache);
  std::lock_guard lock(pool_mu_);
  pool_.push_back(std::move(cache));
  return ok;
}

}  // namespace agenttune::tokenizer_detail
