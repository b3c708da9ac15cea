#include "agenttune/tokenizer/tokenizer_json.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <unordered_map>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace {

using ojson = nlohmann::ordered_json;
constexpr const char* kMark = "\xE2\x96\x81";  // "▁", SentencePiece's escaped space

bool is_normal(const sentencepiece::SentencePieceProcessor& sp, int id) {
  return !sp.IsControl(id) && !sp.IsUnknown(id) && !sp.IsByte(id) && !sp.IsUnused(id);
}

// Byte offsets of the code-point boundaries inside `s` (excluding 0 and s.size()).
std::vector<size_t> char_boundaries(const std::string& s) {
  std::vector<size_t> out;
  for (size_t i = 1; i < s.size(); ++i)
    if ((static_cast<uint8_t>(s[i]) & 0xC0) != 0x80) out.push_back(i);
  return out;
}

size_t char_count(std::string_view s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<uint8_t>(c) & 0xC0) != 0x80; }));
}

// The settings the JSON reproduces, checked by what the model does rather than by its proto fields
// (the Debian library does not ship the proto header): only BPE lacks n-best encoding among the
// trainable types that merge, and one probe string shows the normaliser, the dummy prefix, kept
// whitespace and byte fallback at once, since the pieces of an encoding concatenate (bytes
// unescaped) to the normalised text.
void check_supported(const sentencepiece::SentencePieceProcessor& sp, const std::filesystem::path& model) {
  std::vector<std::vector<int>> nbest;
  if (sp.NBestEncode("probe", 2, &nbest).ok())
    fail("{}: tokenizer.json is generated only for SentencePiece BPE models (this one is a unigram model)",
         model.string());
  for (int b = 0; b < 256; ++b) {
    int id = sp.PieceToId(fmt::format("<0x{:02X}>", b));
    if (id == sp.unk_id() || !sp.IsByte(id))
      fail("{}: tokenizer.json needs a SentencePiece model with byte fallback; byte piece <0x{:02X}> is missing",
           model.string(), b);
  }
  // Two leading spaces, a tab, a space run, NBSP, fullwidth "ｆ", the "ﬁ" ligature (NFKC would
  // change the last three), U+10FFFF (in no vocabulary: byte fallback).
  const std::string probe = "  a\tb   \xC2\xA0\xEF\xBD\x86\xEF\xAC\x81 \xF4\x8F\xBF\xBF";
  std::string want = kMark;
  for (char c : probe) want += c == ' ' ? std::string(kMark) : std::string(1, c);
  std::vector<int> ids;
  if (!sp.Encode(probe, &ids).ok()) fail("{}: SentencePiece could not encode a probe string", model.string());
  std::string got;
  for (int id : ids) {
    const std::string& p = sp.IdToPiece(id);
    got += sp.IsByte(id) ? std::string(1, static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16))) : p;
  }
  if (got != want)
    fail("{}: tokenizer.json reproduces only identity normalisation with a dummy prefix and kept whitespace "
         "(Llama-2's settings); this model normalises the probe differently",
         model.string());
}

ojson added_token(int id, const std::string& content) {
  return {{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},    {"normalized", false}, {"special", true}};
}

ojson replace(const std::string& from, const std::string& to) {
  return {{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

struct Merge {
  int left, right, piece;
  float score;
  size_t left_chars, right_chars;
};

// transformers' generate_merges(vocab, vocab_scores) order: merged piece's score descending, then
// longer left, then longer right; Python's stable sort keeps piece-id order among the rest.
std::vector<Merge> derive_merges(const sentencepiece::SentencePieceProcessor& sp) {
  std::unordered_map<std::string, int> normal;
  const int n = sp.GetPieceSize();
  for (int id = 0; id < n; ++id)
    if (is_normal(sp, id)) normal.emplace(sp.IdToPiece(id), id);
  std::vector<Merge> merges;
  for (int id = 0; id < n; ++id) {
    if (!is_normal(sp, id)) continue;
    const std::string& p = sp.IdToPiece(id);
    for (size_t cut : char_boundaries(p)) {
      auto l = normal.find(p.substr(0, cut)), r = normal.find(p.substr(cut));
      if (l == normal.end() || r == normal.end()) continue;
      merges.push_back({l->second, r->second, id, sp.GetScore(id), char_count(l->first), char_count(r->first)});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
    return a.right_chars > b.right_chars;
  });
  return merges;
}

}  // namespace

ojson sentencepiece_tokenizer_json(const std::filesystem::path& model, const std::vector<AddedToken>& added) {
  sentencepiece::SentencePieceProcessor sp;
  if (auto st = sp.LoadFromSerializedProto(read_text_file(model)); !st.ok())
    fail("{}: not a SentencePiece model: {}", model.string(), st.ToString());
  check_supported(sp, model);
  const int n = sp.GetPieceSize();

  ojson specials = ojson::array();
  for (int id = 0; id < n; ++id)
    if (sp.IsControl(id) || sp.IsUnknown(id)) specials.push_back(added_token(id, sp.IdToPiece(id)));
  for (size_t i = 0; i < added.size(); ++i) {
    if (added[i].id != n + static_cast<int>(i))
      fail("{}: added token {} has id {}, but added tokens must follow the {} pieces in order (expected {})",
           model.string(), added[i].content, added[i].id, n, n + static_cast<int>(i));
    specials.push_back(added_token(added[i].id, added[i].content));
  }

  ojson vocab = ojson::object();
  bool space_in_piece = false;
  for (int id = 0; id < n; ++id) {
    vocab[sp.IdToPiece(id)] = id;
    space_in_piece |= sp.IdToPiece(id).find(' ') != std::string::npos;
  }
  // "left right" strings are what every tokenizers version reads (and Llama-2's own file uses);
  // a piece with a space in it needs the [left, right] form of tokenizers >= 0.20.
  ojson merges = ojson::array();
  for (const auto& m : derive_merges(sp)) {
    const std::string &l = sp.IdToPiece(m.left), &r = sp.IdToPiece(m.right);
    if (space_in_piece) merges.push_back({l, r});
    else merges.push_back(l + " " + r);
  }

  ojson post = nullptr;
  if (sp.bos_id() >= 0) {
    const std::string bos = sp.IdToPiece(sp.bos_id());
    auto special = [&](int type_id) { return ojson{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
    auto seq = [](const char* name, int type_id) { return ojson{{"Sequence", {{"id", name}, {"type_id", type_id}}}}; };
    post = {{"type", "TemplateProcessing"},
            {"single", {special(0), seq("A", 0)}},
            {"pair", {special(0), seq("A", 0), special(1), seq("B", 1)}},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {sp.bos_id()}}, {"tokens", {bos}}}}}}};
  }

  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(specials);
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "Prepend"}, {"prepend", kMark}}, replace(" ", kMark)}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = std::move(post);
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {replace(kMark, " "), {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", sp.IdToPiece(sp.unk_id())},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};
  return j;
}

void write_tokenizer_json(const std::filesystem::path& model, const std::filesystem::path& dir,
                          const std::vector<AddedToken>& added) {
  write_file_atomic(dir / "tokenizer.json", sentencepiece_tokenizer_json(model, added).dump(1) + "\n");
}

}  // namespace agenttune
