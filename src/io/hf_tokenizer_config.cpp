// tokenizer_config.json's chat_template and the template's added tokens (io/hf_tokenizer_config.h).
#include "agenttune/io/hf_tokenizer_config.h"

#include <nlohmann/json.hpp>

#include "agenttune/io/json_file.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/tokenizer/tokenizer_json.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

// A byte-level BPE tokenizer.json numbers its own added tokens (Qwen's <|im_start|>, Llama-3's
// headers). Training put a template's tokens only where they follow the base vocabulary in order
// (prepare_tokenizer), which such a file's added tokens already occupy: its templates use the file's
// tokens and add none, so there is nothing to number; a token the file lacks was never trained.
void check_byte_level_tokens(const std::string& name, const std::vector<std::string>& added, const fs::path& dir) {
  const auto file = dir / "tokenizer.json";
  const auto tok = Tokenizer::load(file);
  for (const auto& content : added)
    if (!tok.piece_to_id(content))
      fail("export --template {}: {} has no token {}, and a byte-level BPE tokenizer gets no new ones (prepare "
           "refuses them too); use the template of the model's family",
           name, file.string(), content);
}

// Templates that add tokens (ChatML) trained with them at ids right after the SentencePiece pieces
// (prepare_tokenizer); transformers must map the same strings to the same ids.
void write_added_tokens(const std::string& name, const std::vector<std::string>& added, int64_t vocab_size,
                        const fs::path& dir, nlohmann::json& tc) {
  if (fs::exists(dir / "tokenizer.json") && !fs::exists(dir / "tokenizer.model"))
    return check_byte_level_tokens(name, added, dir);
  nlohmann::json ids = nlohmann::json::object(), decoder = nlohmann::json::object();
  const auto model_file = dir / "tokenizer.model";
  const bool have_model = fs::exists(model_file);
  const int64_t base = have_model ? Tokenizer::load(model_file).base_vocab_size()
                                  : vocab_size - static_cast<int64_t>(added.size());
  if (vocab_size < base + static_cast<int64_t>(added.size()))
    fail("export --template {}: the model has {} embedding rows, but the tokenizer's {} pieces and the "
         "template's {} added tokens need {}; was it trained with this template?",
         name, vocab_size, base, added.size(), base + static_cast<int64_t>(added.size()));
  std::vector<AddedToken> numbered;
  for (size_t i = 0; i < added.size(); ++i) {
    const auto id = static_cast<int32_t>(base + static_cast<int64_t>(i));
    numbered.push_back({added[i], id, true});
    ids[added[i]] = id;
    decoder[std::to_string(id)] = {{"content", added[i]}, {"special", true},     {"lstrip", false},
                                   {"rstrip", false},     {"normalized", false}, {"single_word", false}};
  }
  tc["added_tokens_decoder"] = decoder;
  if (have_model && fs::exists(dir / "tokenizer.json")) write_tokenizer_json(model_file, dir, numbered);
  write_file_atomic(dir / "added_tokens.json", ids.dump(2) + "\n");
}

}  // namespace

void write_chat_template_files(const fs::path& dir, const std::string& name, const std::string& jinja,
                               const std::vector<std::string>& added, int64_t vocab_size) {
  auto cfg_path = dir / "tokenizer_config.json";
  auto tc = fs::exists(cfg_path) ? read_json_file(cfg_path) : nlohmann::json::object();
  tc["chat_template"] = jinja;
  if (!added.empty()) write_added_tokens(name, added, vocab_size, dir, tc);
  write_file_atomic(cfg_path, tc.dump(2) + "\n");
}

}  // namespace agenttune
