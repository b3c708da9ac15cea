#pragma once
// tokenizer.json (the Hugging Face `tokenizers` format) for a SentencePiece BPE model of the
// Llama-2 kind, so that transformers' and vLLM's fast tokenizers give exactly SentencePiece's ids.
//
// Why it is needed: without a tokenizer.json, transformers 5 builds its fast Llama tokenizer from
// tokenizer.model with two differences from SentencePiece, and 13 of the 69 lines of
// data/tokenizer/parity_corpus.jsonl get other ids: (1) a Metaspace pre-tokenizer prepends the "▁"
// dummy prefix only when the text does not already start with a space (" x" becomes [▁x] where
// SentencePiece gives [▁, ▁x]; 9 lines); (2) it ranks merges by piece id, shorter left half first,
// so space runs inside a line merge differently (indented code; 3 lines). The 13th line holds
// "<s>" as text, which every HF tokenizer, this one too, reads as the control token unless called
// with split_special_tokens=True (SentencePiece never does). The JSON written
// here is the one meta-llama/Llama-2-7b-hf publishes: an unconditional Prepend("▁") + Replace(" ",
// "▁") normaliser, no pre-tokenizer, BPE with byte fallback and fused unknowns, and the
// Replace/ByteFallback/Fuse/Strip decoder. It must be loaded by the generic fast class
// (tokenizer_class PreTrainedTokenizerFast): transformers 5's LlamaTokenizer would keep only its
// vocab and merges and put difference (1) back.
//
// BPE merges are derived from the pieces as transformers' generate_merges does when given the
// scores (every split of a piece into two pieces is a merge; ranked by the merged piece's score,
// best first, then the longer left half, then the longer right half, then piece id; transformers 5
// calls it without scores, hence (2)) but only over NORMAL pieces: a
// control or byte piece is never the result of a SentencePiece merge, so it is no merge here either.
// SentencePiece merges the best-scored adjacent pair, leftmost on ties; `tokenizers` merges the
// lowest-ranked pair. They can only disagree when two different splits of the same piece are both
// available at once, overlapping; tests/cli/test_export_tokenizer.cpp measures the agreement.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune {

// Throws agenttune::Error naming `model` when it is not a SentencePiece model, or not one this JSON
// reproduces exactly: BPE, byte fallback, identity normalisation, a dummy prefix, whitespace kept.
// `added` (ChatML's <|im_start|>, ...) are written as special added tokens at their ids, which must
// follow the base vocabulary.
nlohmann::ordered_json sentencepiece_tokenizer_json(const std::filesystem::path& model,
                                                    const std::vector<AddedToken>& added = {});

// Writes <dir>/tokenizer.json atomically.
void write_tokenizer_json(const std::filesystem::path& model, const std::filesystem::path& dir,
                          const std::vector<AddedToken>& added = {});

}  // namespace agenttune
