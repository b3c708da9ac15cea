#pragma once
// A model's tokenizer plus added tokens (ChatML's <|im_start|>, ...), which get ids after the base
// vocab. Two kinds: the Llama-2 SentencePiece tokenizer (tokenizer.model), and byte-level BPE from a
// Hugging Face tokenizer.json (Llama-3, Qwen2/2.5/3: src/tokenizer/byte_level_bpe.h), whose added
// tokens come from the file. encode() matches added tokens as whole strings before the model sees
// the text (for raw prompts and pretraining text, as transformers does); encode_as_text() never does.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agenttune {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
};

class Tokenizer {
 public:
  // Loads a model folder (a tokenizer.json with a BPE model and ByteLevel pre-tokenizer is byte-level
  // BPE; otherwise its tokenizer.model is SentencePiece), a tokenizer.json, or a SentencePiece .model;
  // throws agenttune::Error naming the file if it is none of these. `fast_bpe` = false keeps every
  // SentencePiece encode on libsentencepiece (the parity tests' reference).
  static Tokenizer load(const std::filesystem::path& model_path, bool fast_bpe = true);

  // Ids exactly as SentencePiece's own encoder (or `tokenizers`, for byte-level BPE) gives them for
  // each stretch of text between added tokens; BOS/EOS only when asked (add_bos adds nothing for a
  // model without a BOS, such as Qwen, as transformers' add_special_tokens does). Safe to call from
  // many threads at once.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false, bool add_eos = false) const;
  // The same ids appended to `out` (no allocation of its own when out has room).
  void encode_into(std::string_view text, std::vector<int32_t>& out, bool add_bos = false,
                   bool add_eos = false) const;
  // Ids of `text` with no added-token matching: a spelled "<|im_end|>" or "</s>" is encoded as the
  // characters it is made of, in one SentencePiece call (transformers' split_special_tokens=True).
  // Chat templates encode all message content this way, so data can never produce a control token.
  // Appends to `out`.
  void encode_as_text(std::string_view text, std::vector<int32_t>& out) const;
  // True when encode runs agenttune's exact re-implementation of SentencePiece BPE with a word
  // cache (src/tokenizer/fast_bpe.h; Llama-2-style models) rather than libsentencepiece, which
  // remains the loader, the decoder and the encoder for any other model and for invalid UTF-8.
  bool uses_fast_bpe() const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string id_to_piece(int32_t id) const;
  // The same piece without a copy; valid while this Tokenizer lives and gets no new token.
  std::string_view piece_view(int32_t id) const;
  std::optional<int32_t> piece_to_id(std::string_view piece) const;  // base pieces and added tokens
  // True for byte-level BPE (a tokenizer.json), false for SentencePiece.
  bool byte_level() const;
  // The bytes token `id` stands for in a byte-level tokenizer's decode(): a base token's raw bytes
  // ("Ġhi" -> " hi"), an added token's through the byte map when all its characters are byte-level
  // ones, else as written. An Error for SentencePiece, whose pieces' text depends on their neighbours.
  std::string token_bytes(int32_t id) const;

  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  // Llama-2 has no pad piece; -1 unless set (fine-tunes use 0 or 2).
  int32_t pad_id() const;
  void set_pad_id(int32_t id);

  int64_t base_vocab_size() const;  // SentencePiece pieces
  int64_t vocab_size() const;       // base + added tokens
  // Adds a token (or returns the id it already has). Ids follow the base vocab in order.
  int32_t add_token(const std::string& content, bool special = true);
  const std::vector<AddedToken>& added_tokens() const;

  // SHA-256 (hex) of the .model bytes, or of tokenizer.json's and then tokenizer_config.json's (which
  // holds a byte-level tokenizer's BOS/EOS/PAD): token shards record it so a mismatched tokenizer is
  // refused.
  const std::string& fingerprint() const;
  const std::filesystem::path& model_path() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace agenttune
