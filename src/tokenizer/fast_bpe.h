#pragma once
// Internal to the tokenizer area: a faster, exact encoder for SentencePiece BPE models of the
// Llama-2 kind, which agenttune::Tokenizer::encode uses whenever the model allows it. Debian's
// libsentencepiece (0.1.97) encodes at about half the speed of the pip wheel, so a plain C++ loop
// over it loses to a Python script. Two facts make a word cache exact here:
//  * when no piece has "▁" after another character, no merge can cross the start of a "▁" run, so
//    BPE on the whole text equals BPE on each "▁...word" segment, and segments repeat a lot;
//  * SentencePiece BPE is "merge the adjacent pair whose union is the highest-scored piece, the
//    leftmost on ties", then byte fallback for what is left unknown, which is simple to reproduce.
// from_proto() checks the model proto for exactly the settings this relies on (BPE, identity
// normalizer, dummy prefix, escaped spaces, byte fallback, no user-defined or unused pieces, no
// "▁" inside a piece) and returns null otherwise, so the Tokenizer keeps SentencePiece. encode()
// declines text that is not valid UTF-8 (SentencePiece replaces each bad byte by U+FFFD), and the
// Tokenizer hands that text to SentencePiece too. tests/tokenizer/test_fast_bpe.cpp checks ids.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agenttune::tokenizer_detail {

class FastBpe {
 public:
  // Null (with the reason in `why_not`) when the model needs a feature this encoder lacks.
  static std::shared_ptr<const FastBpe> from_proto(std::string_view proto, std::string* why_not);
  static std::shared_ptr<const FastBpe> load(const std::filesystem::path& model, std::string* why_not);

  // Word -> ids memo. One per thread at a time; encode() without one borrows from a pool.
  class Cache {
   public:
    const int32_t* find(std::string_view word, uint32_t& n) const;
    void add(std::string_view word, const int32_t* ids, uint32_t n);

   private:
    struct Hash {
      using is_transparent = void;
      size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    struct Span {
      uint32_t begin, size;
    };
    // Short words (most of them) live in an open-addressed table of one-cache-line slots that
    // hold the key and the ids inline: a hit costs one probe. The rest go to map_ and ids_.
    struct Slot {
      uint64_t hash;
      uint8_t key_len, n;  // key_len 0: empty
      char key[26];
      int32_t ids[7];
    };
    static_assert(sizeof(Slot) == 64);
    std::vector<Slot> slots_;
    size_t used_ = 0;
    std::unordered_map<std::string, Span, Hash, std::equal_to<>> map_;
    std::vector<int32_t> ids_;  // map_'s ids, back to back
    std::string key_;           // scratch: the dummy-prefixed first word
    std::vector<int32_t> word_ids_;
    friend class FastBpe;
  };

  // Appends the ids of `text` (no BOS/EOS) to out and returns true, or returns false and leaves
  // out as it was when `text` is not valid UTF-8.
  bool encode(std::string_view text, std::vector<int32_t>& out, Cache& cache) const;
  // The same with a cache borrowed from this encoder's pool: safe from any number of threads.
  bool encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  struct Piece {
    int32_t id;
    float score;
  };
  // Ids of one word: raw text bytes, where ' ' stands for "▁" (both are the same symbol).
  void encode_word(std::string_view word, std::vector<int32_t>& out, Cache& cache) const;
  void bpe(std::string_view normalized, std::vector<int32_t>& out) const;
  const Piece* find(std::string_view s) const;
  std::vector<std::string> storage_;
  std::unordered_map<std::string_view, Piece> pieces_;  // NORMAL pieces: what merges may produce
  int32_t byte_ids_[256] = {};
  mutable std::mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Cache>> pool_;  // idle caches
};

}  // namespace agenttune::tokenizer_detail
