#pragma once
// Internal to the tokenizer area: byte-level BPE as Hugging Face `tokenizers` runs a tokenizer.json
// of the GPT-2 / Llama-3 / Qwen2 kind, for the stretches of text between added tokens:
//   NFC (when the file's normaliser says so) -> the pre-tokenizer's Split regex (PCRE2, "isolated":
//   matches and the gaps between them are pieces) -> per piece, its bytes merged by rank, the lowest
//   rank first and the leftmost on ties (tokenizers' word.rs), or, with `ignore_merges`, the whole
//   piece's id when the piece is a vocabulary entry.
// Text that is not valid UTF-8 is first made valid the way Python's bytes.decode(errors="replace")
// and Rust's from_utf8_lossy do (each maximal invalid subpart becomes U+FFFD), so the ids are those
// `tokenizers` gives for that decoded string. Pieces repeat a lot, so ids per piece are memoised in a
// word cache (fast_bpe.h's), one per thread at a time from a pool: encode() is safe from any thread.
// from_json() accepts only what it reproduces exactly and names the first thing it does not.
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fast_bpe.h"
#include "split_regex.h"

namespace agenttune::tokenizer_detail {

class ByteLevelBpe {
 public:
  // `json` is a whole tokenizer.json; `where` names it in errors. Added tokens are the caller's.
  static std::shared_ptr<const ByteLevelBpe> from_json(const nlohmann::json& json, const std::string& where);
  // True when `json` declares a BPE model with a ByteLevel pre-tokenizer (this class's kind).
  static bool is_byte_level(const nlohmann::json& json);

  // Appends the bytes a GPT-2 byte-level string stands for ("Ġhi" -> " hi"); false when a character
  // is not one of the 256 byte-level characters (out then holds a prefix).
  static bool unmap(std::string_view piece, std::string& out);

  // Appends the ids of `text` (no added-token matching, nothing prepended).
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  // The raw bytes a base id stands for (decode), and its vocabulary string (the GPT-2 byte-mapped
  // form, "Ġhello", as tokenizers' id_to_token gives it).
  std::string_view bytes(int32_t id) const { return bytes_[id]; }
  std::string_view piece(int32_t id) const { return pieces_[id]; }
  int32_t size() const { return static_cast<int32_t>(pieces_.size()); }
  const std::unordered_map<std::string_view, int32_t>& vocab() const { return by_piece_; }
  // The post-processor's single-sequence prefix token (Llama-3's <|begin_of_text|>), if any.
  const std::string& template_prefix() const { return prefix_; }

 private:
  struct Scratch {
    FastBpe::Cache cache;
    SplitRegex::State match;
    std::string repaired, normalized;  // copies of the text, made only when needed
    std::vector<int32_t> ids;
  };
  struct Merge {
    int32_t rank, id;
  };
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Scratch& s) const;
  void merge(std::string_view piece, std::vector<int32_t>& out) const;
  std::unique_ptr<Scratch> borrow() const;
  void give_back(std::unique_ptr<Scratch> s) const;

  std::vector<std::string> pieces_, bytes_;              // by id
  std::unordered_map<std::string_view, int32_t> by_piece_;  // keys view pieces_
  std::unordered_map<std::string_view, int32_t> by_bytes_;  // keys view bytes_ (ignore_merges)
  std::unordered_map<uint64_t, Merge> merges_;              // (left id << 32 | right id)
  std::array<int32_t, 256> byte_ids_{};
  std::unique_ptr<SplitRegex> split_;
  bool nfc_ = false, ignore_merges_ = false;
  std::string prefix_;
  mutable std::mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Scratch>> pool_;
};

}  // namespace agenttune::tokenizer_detail
