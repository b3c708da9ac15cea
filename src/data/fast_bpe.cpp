#include "fast_bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "agenttune/util/files.h"

namespace agenttune::data {

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

}  // namespace

std::shared_ptr<const FastBpe> FastBpe::load(const std::filesystem::path& model, std::string* why_not) {
  const std::string proto = read_text_file(model);
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
      if (type == kUnknown) bpe->unk_id_ = id, unk = true;
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

void FastBpe::Session::encode_word(std::string_view word, std::vector<int32_t>& out) {
  constexpr size_t kCachedWord = 64, kMaxEntries = 1 << 18;  // ~40 MB per thread at most
  if (word.size() > kCachedWord) return bpe_->bpe(word, out);
  if (auto it = cache_.find(word); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  word_ids_.clear();
  bpe_->bpe(word, word_ids_);
  out.insert(out.end(), word_ids_.begin(), word_ids_.end());
  if (cache_.size() >= kMaxEntries) cache_.clear();  // bounded memory on corpora of unique tokens
  cache_.emplace(std::string(word), word_ids_);
}

void FastBpe::Session::encode(std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  normalized_.assign(kMark);
  for (char c : text) {
    if (c == ' ') normalized_ += kMark;
    else normalized_ += c;
  }
  // Segments start where a "▁" run follows another character.
  const std::string_view n = normalized_;
  size_t start = 0;
  bool after_mark = false;
  for (size_t i = 0; i < n.size();) {
    if (n.compare(i, kMark.size(), kMark) == 0) {
      if (!after_mark && i > start) encode_word(n.substr(start, i - start), out), start = i;
      after_mark = true;
      i += kMark.size();
    } else {
      after_mark = false;
      ++i;
    }
  }
  encode_word(n.substr(start), out);
}

}  // namespace agenttune::data
