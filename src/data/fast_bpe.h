#pragma once
// A faster encoder for SentencePiece BPE models of the Llama-2 kind, for `prepare` only. Debian's
// libsentencepiece (0.1.97) encodes at about half the speed of the pip wheel, so a plain C++ loop
// over it loses to a Python script. Two facts make a word cache exact here:
//  * when no piece has "▁" after another character, no merge can cross the start of a "▁" run, so
//    BPE on the whole text equals BPE on each "▁...word" segment, and segments repeat a lot;
//  * SentencePiece BPE is "merge the adjacent pair whose union is the highest-scored piece, the
//    leftmost on ties", then byte fallback for what is left unknown, which is simple to reproduce.
// load() checks the model proto for exactly the settings this relies on (BPE, identity normalizer,
// dummy prefix, byte fallback, no user-defined or unused pieces) and returns null otherwise, so
// prepare falls back to agenttune::Tokenizer. tests/data/test_fast_bpe.cpp checks ids against it.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agenttune::data {

class FastBpe {
 public:
  // Null (with the reason in `why_not`) when the model needs a feature this encoder lacks.
  static std::shared_ptr<const FastBpe> load(const std::filesystem::path& model, std::string* why_not);

  struct Piece {
    int32_t id;
    float score;
  };
  // Per-thread state: the word cache and scratch buffers. Not shareable between threads.
  class Session {
   public:
    explicit Session(std::shared_ptr<const FastBpe> bpe) : bpe_(std::move(bpe)) {}
    // Appends the ids of `text` (no BOS/EOS) to out.
    void encode(std::string_view text, std::vector<int32_t>& out);

   private:
    struct Hash {
      using is_transparent = void;
      size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    void encode_word(std::string_view word, std::vector<int32_t>& out);
    std::shared_ptr<const FastBpe> bpe_;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> cache_;
    std::string normalized_;
    std::vector<int32_t> word_ids_;
  };

 private:
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  const Piece* find(std::string_view s) const;
  std::vector<std::string> storage_;
  std::unordered_map<std::string_view, Piece> pieces_;  // NORMAL pieces: what merges may produce
  int32_t byte_ids_[256] = {};
  int32_t unk_id_ = 0;
};

}  // namespace agenttune::data
