#include "agenttune/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "agenttune/util/sha256.h"
#include "byte_level_bpe.h"
#include "fast_bpe.h"
#include "text_repair.h"

namespace agenttune {

// Stretches between added tokens are each encoded by a separate SentencePiece call, so each gets
// SentencePiece's dummy prefix "▁" exactly as Python's `sp.encode(stretch)` would: "<|im_start|>user"
// becomes [<|im_start|>, ▁user]. This matches HF's LlamaTokenizer with legacy=True (the behaviour
// the published Llama-2 fine-tunes, AgentLM and Agent-FLAN included, were trained with). HF's
// legacy=False would give [<|im_start|>, user] instead; we deliberately do not follow it, because
// the one oracle we can check exactly is SentencePiece itself, and decode() strips the prefix per
// stretch in the same way, so decode(encode(x)) == x still holds around added tokens.
struct Tokenizer::Impl {
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp;  // immutable, shared by copies
  std::shared_ptr<const tokenizer_detail::FastBpe> fast;           // null: SentencePiece encodes
  std::shared_ptr<const tokenizer_detail::ByteLevelBpe> bytes;     // set: a tokenizer.json's byte-level BPE
  std::shared_ptr<const std::vector<std::string>> pieces;          // base vocab by id
  std::filesystem::path path;
  std::string fingerprint;
  int32_t base_size = 0;
  int32_t pad = -1;
  int32_t bos = -1, eos = -1, unk = -1;  // SentencePiece looks these up by piece on every call
  std::vector<AddedToken> added;         // in insertion order
  std::vector<size_t> by_length;         // indices into `added`, longest content first
  std::array<bool, 256> first_byte{};    // bytes that can start an added token: a cheap pre-filter
  int32_t next_id = 0;                   // id the next new added token gets

  // The added token that starts at text[pos] (longest first), or nullptr.
  const AddedToken* match(std::string_view text, size_t pos) const {
    if (!first_byte[static_cast<uint8_t>(text[pos])]) return nullptr;
    for (size_t i : by_length) {
      const auto& c = added[i].content;
      if (text.compare(pos, c.size(), c) == 0) return &added[i];
    }
    return nullptr;
  }

  void encode_stretch(std::string_view s, std::vector<int32_t>& out) const {
    if (s.empty()) return;
    if (bytes) return bytes->encode(s, out);
    if (fast && fast->encode(s, out)) return;  // declines only text that is not valid UTF-8
    std::vector<int> ids;
    auto status = sp->Encode(s, &ids);
    if (!status.ok()) fail("{}: SentencePiece encode failed: {}", path.string(), status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }

  const AddedToken* added_by_id(int32_t id) const {
    for (const auto& t : added)
      if (t.id == id) return &t;
    return nullptr;
  }

  static Tokenizer load_byte_level(const std::filesystem::path& file, const std::string& text,
                                   const nlohmann::json& json);
  // Appends token `id`'s bytes (byte-level kind, id inside the vocabulary): see token_bytes().
  void append_byte_level(int32_t id, std::string& raw) const;
};

namespace {

nlohmann::json parse_json(const std::filesystem::path& file, const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", file.string(), e.what());
  }
}

// A special-token entry of tokenizer_config.json (`file`): a string, {"content": ...}, or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key,
                                        const std::filesystem::path& file) {
  if (!config.contains(key) || config[key].is_null()) return std::nullopt;
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail("{}: {} must be a token string, {{\"content\": ...}} or null, got {}", file.string(), key,
       v.dump().substr(0, 200));
}

}  // namespace

// Added tokens are registered in id order and must continue the vocabulary (or be one of its
// entries); BOS is what the post-processor prepends, else tokenizer_config.json's bos_token; EOS and
// PAD come from tokenizer_config.json beside the file (none without one). That file is hashed into the
// fingerprint with tokenizer.json: another eos_token changes what prepare appends.
Tokenizer Tokenizer::Impl::load_byte_level(const std::filesystem::path& file, const std::string& text,
                                           const nlohmann::json& json) {
  Tokenizer t;
  t.impl_ = std::make_shared<Impl>();
  Impl& m = *t.impl_;
  m.bytes = tokenizer_detail::ByteLevelBpe::from_json(json, file.string());
  m.path = file;
  m.base_size = m.next_id = m.bytes->size();
  std::vector<nlohmann::json> added;
  if (json.contains("added_tokens")) added.assign(json["added_tokens"].begin(), json["added_tokens"].end());
  std::stable_sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.at("id") < b.at("id"); });
  for (const auto& a : added) {
    const std::string content = a.at("content").get<std::string>();
    if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false) ||
        (a.value("normalized", false) && !json.value("normalizer", nlohmann::json()).is_null()))
      fail("{}: added token \"{}\" uses lstrip, rstrip, single_word or normalized matching, which agenttune does "
           "not support", file.string(), content);
    const int32_t want = a.at("id").get<int32_t>(), got = t.add_token(content, a.value("special", true));
    if (got != want)
      fail("{}: added token \"{}\" has id {}, but added tokens must follow the vocabulary in order (next id {})",
           file.string(), content, want, got);
  }
  nlohmann::json config;
  const auto cfg = file.parent_path() / "tokenizer_config.json";
  std::string config_text;
  if (std::filesystem::exists(cfg)) config = parse_json(cfg, config_text = read_text_file(cfg));
  m.fingerprint = sha256_hex(text + config_text);
  // `named_in`: the file whose entry `what` names the token, for the error.
  auto id_of = [&](const std::optional<std::string>& token, const std::string& what,
                   const std::filesystem::path& named_in) {
    if (!token) return -1;
    const auto id = t.piece_to_id(*token);
    if (!id) fail("{}: {} \"{}\" is not a token of {}", named_in.string(), what, *token, file.string());
    return *id;
  };
  const std::string& prefix = m.bytes->template_prefix();
  m.bos = prefix.empty() ? id_of(config_token(config, "bos_token", cfg), "bos_token", cfg)
                         : id_of(prefix, "the post_processor's prefix token", file);
  m.eos = id_of(config_token(config, "eos_token", cfg), "eos_token", cfg);
  m.pad = id_of(config_token(config, "pad_token", cfg), "pad_token", cfg);
  m.unk = -1;  // every byte has a token
  return t;
}

// As tokenizers' ByteLevel decoder takes each token.
void Tokenizer::Impl::append_byte_level(int32_t id, std::string& raw) const {
  if (id < base_size) {
    raw += bytes->bytes(id);
    return;
  }
  const std::string& content = added_by_id(id)->content;
  const size_t before = raw.size();
  if (!tokenizer_detail::ByteLevelBpe::unmap(content, raw)) raw.resize(before), raw += content;
}

Tokenizer Tokenizer::load(const std::filesystem::path& path, bool fast_bpe) {
  std::filesystem::path model_path = path;
  if (std::filesystem::is_directory(path)) {
    model_path = path / "tokenizer.model";
    if (const auto file = path / "tokenizer.json"; std::filesystem::exists(file)) {
      const std::string text = read_text_file(file);
      const auto json = parse_json(file, text);
      if (tokenizer_detail::ByteLevelBpe::is_byte_level(json)) return Impl::load_byte_level(file, text, json);
    }
    if (!std::filesystem::exists(model_path))
      fail("{}: holds neither a byte-level BPE tokenizer.json nor a SentencePiece tokenizer.model", path.string());
  } else if (path.extension() == ".json") {
    const std::string text = read_text_file(path);
    const auto json = parse_json(path, text);
    if (!tokenizer_detail::ByteLevelBpe::is_byte_level(json))
      fail("{}: not a byte-level BPE tokenizer.json (model BPE with a ByteLevel pre-tokenizer); a SentencePiece "
           "model loads from its tokenizer.model", path.string());
    return Impl::load_byte_level(path, text, json);
  }
  std::string bytes = read_text_file(model_path);  // throws naming the file if missing
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  auto status = sp->LoadFromSerializedProto(bytes);
  if (!status.ok())
    fail("{}: not a SentencePiece model: {}", model_path.string(), status.ToString());
  if (sp->GetPieceSize() <= 0) fail("{}: SentencePiece model has no pieces", model_path.string());
  Tokenizer t;
  t.impl_ = std::make_shared<Impl>();
  t.impl_->sp = sp;
  t.impl_->path = model_path;
  t.impl_->fingerprint = sha256_hex(bytes);
  t.impl_->base_size = sp->GetPieceSize();
  t.impl_->next_id = t.impl_->base_size;
  t.impl_->pad = sp->pad_id();
  t.impl_->bos = sp->bos_id();
  t.impl_->eos = sp->eos_id();
  t.impl_->unk = sp->unk_id();
  auto pieces = std::make_shared<std::vector<std::string>>(t.impl_->base_size);
  for (int32_t id = 0; id < t.impl_->base_size; ++id) (*pieces)[id] = sp->IdToPiece(id);
  t.impl_->pieces = std::move(pieces);
  if (fast_bpe) {
    std::string why_not;
    t.impl_->fast = tokenizer_detail::FastBpe::from_proto(bytes, &why_not);
    if (!t.impl_->fast)
      log::info("{}: encoding through libsentencepiece: agenttune's fast BPE does not apply ({})",
                model_path.string(), why_not);
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  encode_into(text, out, add_bos, add_eos);
  return out;
}

bool Tokenizer::uses_fast_bpe() const { return impl_->fast != nullptr || impl_->bytes != nullptr; }

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out, bool add_bos, bool add_eos) const {
  const Impl& m = *impl_;
  if (add_bos && m.bos >= 0) out.push_back(m.bos);
  if (add_eos && m.eos < 0) fail("{}: encode with an EOS, but the tokenizer has no eos_token", m.path.string());
  size_t start = 0;
  if (!m.added.empty()) {
    for (size_t pos = 0; pos < text.size();) {
      const AddedToken* t = m.match(text, pos);
      if (t == nullptr) {
        ++pos;
        continue;
      }
      m.encode_stretch(text.substr(start, pos - start), out);
      out.push_back(t->id);
      pos += t->content.size();
      start = pos;
    }
  }
  m.encode_stretch(text.substr(start), out);
  if (add_eos) out.push_back(eos_id());
}

void Tokenizer::encode_as_text(std::string_view text, std::vector<int32_t>& out) const {
  impl_->encode_stretch(text, out);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  std::string out;
  if (m.bytes) {  // tokenizers' ByteLevel decoder: the tokens' bytes, then invalid UTF-8 -> U+FFFD
    std::string raw;
    for (int32_t id : ids) {
      if (id < 0 || id >= m.next_id) fail("decode: token id {} is outside the vocabulary [0, {})", id, m.next_id);
      m.append_byte_level(id, raw);
    }
    tokenizer_detail::append_utf8_lossy(raw, out);
    return out;
  }
  std::vector<int> stretch;
  auto flush = [&] {
    if (stretch.empty()) return;
    std::string s;
    auto status = m.sp->Decode(stretch, &s);
    if (!status.ok()) fail("{}: SentencePiece decode failed: {}", m.path.string(), status.ToString());
    out += s;
    stretch.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= m.next_id)
      fail("decode: token id {} is outside the vocabulary [0, {})", id, m.next_id);
    // Added tokens with ids inside the base vocab (e.g. a registered "</s>") decode as SentencePiece
    // pieces; only the new ids need their text spliced in.
    if (id >= m.base_size) {
      flush();
      out += m.added_by_id(id)->content;
    } else {
      stretch.push_back(id);
    }
  }
  flush();
  return out;
}

std::string Tokenizer::id_to_piece(int32_t id) const { return std::string(piece_view(id)); }

std::string_view Tokenizer::piece_view(int32_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || id >= m.next_id)
    fail("id_to_piece: token id {} is outside the vocabulary [0, {})", id, m.next_id);
  if (id >= m.base_size) return m.added_by_id(id)->content;
  if (m.bytes) return m.bytes->piece(id);
  return (*m.pieces)[id];
}

std::optional<int32_t> Tokenizer::piece_to_id(std::string_view piece) const {
  for (const auto& t : impl_->added)
    if (t.content == piece) return t.id;
  if (impl_->bytes) {
    const auto& vocab = impl_->bytes->vocab();
    const auto it = vocab.find(piece);
    return it == vocab.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  int id = impl_->sp->PieceToId(piece);
  // PieceToId answers unk_id for unknown pieces; only "<unk>" itself really is that id.
  if (id == impl_->sp->unk_id() && piece != impl_->sp->IdToPiece(id)) return std::nullopt;
  return id;
}

bool Tokenizer::byte_level() const { return impl_->bytes != nullptr; }

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& m = *impl_;
  if (!m.bytes) fail("{}: token_bytes needs a byte-level BPE tokenizer, not SentencePiece", m.path.string());
  if (id < 0 || id >= m.next_id) fail("token_bytes: token id {} is outside the vocabulary [0, {})", id, m.next_id);
  std::string out;
  m.append_byte_level(id, out);
  return out;
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }

void Tokenizer::set_pad_id(int32_t id) {
  if (id < -1 || id >= impl_->next_id)
    fail("pad id {} is outside the vocabulary [0, {})", id, impl_->next_id);
  if (impl_.use_count() > 1) impl_ = std::make_shared<Impl>(*impl_);  // copies stay independent
  impl_->pad = id;
}

int64_t Tokenizer::base_vocab_size() const { return impl_->base_size; }
int64_t Tokenizer::vocab_size() const { return impl_->next_id; }

int32_t Tokenizer::add_token(const std::string& content, bool special) {
  if (content.empty()) fail("{}: an added token cannot be empty", impl_->path.string());
  for (const auto& t : impl_->added)
    if (t.content == content) return t.id;
  // Copy-on-write: a Tokenizer copy handed to another component must not see this token appear.
  if (impl_.use_count() > 1) impl_ = std::make_shared<Impl>(*impl_);
  Impl& m = *impl_;
  // A string that already is a SentencePiece piece (e.g. "</s>") keeps its id but is now matched
  // as a whole in text, as HF does when such a token is registered as special.
  std::optional<int32_t> base = piece_to_id(content);
  int32_t id = base ? *base : m.next_id++;
  m.added.push_back({content, id, special});
  m.by_length.push_back(m.added.size() - 1);
  std::stable_sort(m.by_length.begin(), m.by_length.end(), [&](size_t a, size_t b) {
    return m.added[a].content.size() > m.added[b].content.size();
  });
  m.first_byte[static_cast<uint8_t>(content[0])] = true;
  return id;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::string& Tokenizer::fingerprint() const { return impl_->fingerprint; }
const std::filesystem::path& Tokenizer::model_path() const { return impl_->path; }

}  // namespace agenttune
