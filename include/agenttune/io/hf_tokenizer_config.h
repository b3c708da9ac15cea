#pragma once
// A chat template in a Hugging Face folder's tokenizer files, so transformers' apply_chat_template
// renders prompts exactly as training did (`agenttune export --template`).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune {

// Sets tokenizer_config.json's chat_template to `jinja` in `dir` (keeping its other keys, creating
// it if missing). Tokens the template adds (ChatML's <|im_start|>, ...) were trained at the ids
// right after the SentencePiece pieces (prepare_tokenizer); they are numbered the same way into
// added_tokens_decoder, added_tokens.json and, when `dir` has tokenizer.model and tokenizer.json,
// tokenizer.json, so transformers maps the same strings to the same ids. A byte-level BPE
// tokenizer.json (no tokenizer.model) is left as it is: it must already hold every template token
// (else an error naming the token). Without either file the pieces are taken to be the model's rows
// less the added tokens. Throws agenttune::Error,
// naming `template_name`, when the model's `vocab_size` embedding rows cannot hold the pieces and
// the added tokens.
void write_chat_template_files(const std::filesystem::path& dir, const std::string& template_name,
                               const std::string& jinja, const std::vector<std::string>& added_tokens,
                               int64_t vocab_size);

}  // namespace agenttune
