#include "agenttune/data/source_dataset.h"
#include "agenttune/data/mixture.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <unordered_map>

#include "agenttune/model/loss.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "agenttune/util/seeded.h"

namespace agenttune {

namespace {

// Fisher-Yates with our own index draw: std::shuffle's algorithm is unspecified, and the order
// must be identical on every platform for exact resume.
std::vector<int64_t> permutation(const std::vector<int64_t>& items, uint64_t seed) {
  std::vector<int64_t> p = items;
  std::mt19937_64 rng(seed);
  for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[rng() % i]);
  return p;
}

// Any id works (it is never trained nor attended to by real tokens); 0 is Llama-2's <unk>, the
// pad id most Llama fine-tunes use.
constexpr int64_t kPadToken = 0;

}  // namespace

struct Mixture::Source {
  TokenDataset data;
  std::vector<int64_t> train_docs, val_docs;
  int64_t cached_epoch = -1;
  std::vector<int64_t> perm;
  // Ids at or above this are refused: the source's vocab_size, lowered to the model's once known.
  int64_t id_limit = 0;
  // Conversations longer than seq_len, as data.overlength fitted them (dropped ones are in
  // neither train_docs nor val_docs); every other document is one piece, itself.
  std::unordered_map<int64_t, std::vector<ConversationPiece>> fitted;
  OverlengthCounts overlength;

  // The piece of `doc` that starts at `offset` (0, or a later window's start).
  ConversationPiece piece_at(int64_t doc, int64_t offset) const {
    auto it = fitted.find(doc);
    if (it == fitted.end() && offset == 0) return {0, 0, data.document_length(doc)};
    if (it != fitted.end())
      for (const auto& p : it->second)
        if (p.begin == offset) return p;
    fail("data state: document {} has no piece starting at {} (was the data or data.seq_len changed?)", doc, offset);
  }
  // The piece after the one starting at `offset`, if any.
  std::optional<ConversationPiece> piece_after(int64_t doc, int64_t offset) const {
    auto it = fitted.find(doc);
    if (it == fitted.end()) return std::nullopt;
    for (const auto& p : it->second)
      if (p.begin > offset) return p;
    return std::nullopt;
  }
};

Mixture::Mixture(MixtureOptions opts) : opts_(std::move(opts)) {
  if (opts_.sources.empty()) fail("data.sources: at least one source is required");
  if (opts_.seq_len < 2) fail("data.seq_len must be at least 2, got {}", opts_.seq_len);
  for (size_t i = 0; i < opts_.sources.size(); ++i) {
    const auto& s = opts_.sources[i];
    if (!(s.weight > 0)) fail("data.sources[{}] '{}': weight must be positive, got {}", i, s.name, s.weight);
    auto src = std::make_shared<Source>(Source{open_source(s), {}, {}, -1, {}, 0});
    const auto& made_with = src->data.manifest().tokenizer_sha256;
    if (!opts_.tokenizer_sha256.empty() && made_with != opts_.tokenizer_sha256)
      fail("{}: data.sources[{}] '{}' was prepared with the tokenizer of sha256 {}, but data.tokenizer {} has "
           "sha256 {}; re-run prepare with this tokenizer, or set data.tokenizer to the one the source was "
           "prepared with",
           (s.path / "manifest.json").string(), i, s.name, made_with,
           opts_.tokenizer.empty() ? std::string("(unnamed)") : opts_.tokenizer.string(), opts_.tokenizer_sha256);
    src->id_limit = src->data.manifest().vocab_size;
    sources_.push_back(std::move(src));
    fit_conversations(i);
    auto& added = *sources_.back();
    for (int64_t d = 0; d < added.data.num_documents(); ++d) {
      if (added.data.document_length(d) == 0) continue;
      if (auto it = added.fitted.find(d); it != added.fitted.end() && it->second.empty()) continue;
      uint64_t h = splitmix64(opts_.seed * 0x100000001b3ULL ^ splitmix64(i * 0x9e37ULL + static_cast<uint64_t>(d)));
      bool held_out = static_cast<double>(h % 1000000) < opts_.validation_fraction * 1e6;
      (held_out ? added.val_docs : added.train_docs).push_back(d);
    }
    if (added.train_docs.empty())
      fail("data.sources[{}] '{}' ({}): no training documents ({})", i, s.name, s.path.string(),
           added.overlength.dropped > 0
               ? fmt::format("data.overlength {} dropped {} conversation(s) longer than data.seq_len {}",
                             ConfigScalar<Overlength>::format(opts_.overlength), added.overlength.dropped, opts_.seq_len)
               : fmt::format("validation_fraction {} took them all?", opts_.validation_fraction));
  }
  state_.sources.resize(sources_.size());
}

// Reads the mask of every conversation longer than seq_len (the rest fit as they are) and fits
// it once, so rows, counts and the resume state never depend on when a document is drawn.
void Mixture::fit_conversations(size_t i) {
  auto& src = *sources_[i];
  if (!src.data.has_mask()) return;
  const int64_t T = opts_.seq_len;
  auto& counts = src.overlength;
  std::vector<uint8_t> mask;
  for (int64_t d = 0; d < src.data.num_documents(); ++d) {
    const int64_t len = src.data.document_length(d);
    if (len == 0) continue;
    if (len <= T) {
      ++counts.conversations;
      continue;
    }
    mask.resize(len);
    src.data.read_mask(d, 0, len, mask.data());
    FittedConversation f = fit_conversation(mask.data(), len, T, opts_.overlength);
    counts.add(f);
    src.fitted.emplace(d, std::move(f.pieces));
  }
  // Every conversation's trained tokens, not only the long ones' that add() summed.
  counts.trained = src.data.manifest().trained_tokens;
  if (counts.over == 0) return;
  const std::string text = fmt::format("data source '{}' (data.overlength {}): {}", opts_.sources[i].name,
                                       ConfigScalar<Overlength>::format(opts_.overlength), counts.describe(T));
  if (counts.lost_share() > kOverlengthWarnShare || counts.dropped_share() > kOverlengthWarnShare)
    log::warn("{}; more than {:.0f}% lost: raise data.seq_len, or try data.overlength: window", text,
              100 * kOverlengthWarnShare);
  else
    log::info("{}", text);
}

const OverlengthCounts& Mixture::overlength(size_t source) const { return sources_.at(source)->overlength; }

double Mixture::rows_per_pass() const {
  const int64_t T = opts_.seq_len;
  const bool pad = opts_.packing == Packing::Pad;
  double rows = 0;
  for (const auto& src : sources_) {
    int64_t fill = 0, tokens = 0;
    for (int64_t d : src->train_docs) {
      const int64_t len = src->data.document_length(d);
      if (!src->data.has_mask()) {
        tokens += len;
        if (pad) rows += static_cast<double>((len + T - 1) / T);
        continue;
      }
      auto it = src->fitted.find(d);
      const std::vector<ConversationPiece> whole{{0, 0, len}};
      for (const auto& p : it == src->fitted.end() ? whole : it->second) {
        if (pad || fill + p.size() > T) {
          rows += fill > 0 ? 1 : 0;
          fill = 0;
        }
        fill += p.size();
      }
    }
    if (fill > 0) rows += 1;
    if (!src->data.has_mask() && !pad) rows += static_cast<double>(tokens) / static_cast<double>(T);
  }
  return rows;
}

bool Mixture::has_conversations() const {
  for (const auto& s : sources_)
    if (s->data.has_mask()) return true;
  return false;
}

size_t Mixture::pick_source() const {
  double total_w = 0;
  for (const auto& s : opts_.sources) total_w += s.weight;
  int64_t total = 0;
  for (const auto& c : state_.sources) total += c.tokens;
  size_t best = 0;
  double best_deficit = -1e300;
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (sources_[i]->train_docs.empty()) continue;  // only in a validation pass
    double deficit = opts_.sources[i].weight / total_w * static_cast<double>(total + 1) -
                     static_cast<double>(state_.sources[i].tokens);
    if (deficit > best_deficit) best_deficit = deficit, best = i;
  }
  return best;
}

std::pair<size_t, int64_t> Mixture::next_document(size_t i) {
  auto& src = *sources_[i];
  auto& cur = state_.sources[i];
  if (cur.position >= static_cast<int64_t>(src.train_docs.size())) {
    // A small source may wrap hundreds of times in a run: the first wrap is news, the rest are
    // counted (epochs_done) and summed up at the end of the run.
    if (cur.epoch == 0)
      log::info("data source '{}': epoch 1 done ({} documents); reshuffled for epoch 2 (later epochs are counted, "
                "not logged)", opts_.sources[i].name, src.train_docs.size());
    else
      log::debug("data source '{}': epoch {} done; starting epoch {}, reshuffled", opts_.sources[i].name,
                 cur.epoch + 1, cur.epoch + 2);
    ++cur.epoch;
    cur.position = 0;
  }
  if (src.cached_epoch != cur.epoch) {
    src.perm = permutation(src.train_docs, splitmix64(opts_.seed ^ splitmix64(i + 1) ^ splitmix64(cur.epoch + 7)));
    src.cached_epoch = cur.epoch;
  }
  return {i, src.perm[cur.position++]};
}

// Packs documents into one window of T tokens. Targets are the next token of the same document;
// the target across a document boundary (predicting the next document's BOS) is never trained.
// A pretraining document cut by the window end continues, with positions from 0, in the next
// window; a conversation is never cut: a piece that does not fit the rest of the window starts
// the next one, and the rest of this one is padding.
int64_t Mixture::fill_window(int64_t* tokens, int64_t* targets, int64_t* positions, int64_t* doc_ids,
                             std::vector<int64_t>& source_tokens) {
  const int64_t T = opts_.seq_len;
  int64_t filled = 0, segment = 0;
  while (filled < T) {
    if (state_.carry_doc < 0) {
      auto [s, d] = next_document(pick_source());
      state_.carry_source = static_cast<int64_t>(s);
      state_.carry_doc = d;
      state_.carry_offset = 0;
    }
    const int64_t placed = place_document(filled, segment, tokens, targets, positions, doc_ids, source_tokens);
    if (placed == 0) break;
    filled += placed;
    ++segment;
    if (opts_.packing == Packing::Pad) break;
  }
  // Padding is a segment of its own: untrained, and isolated under document attention.
  if (tokens != nullptr)
    for (int64_t k = filled; k < T; ++k) {
      tokens[k] = kPadToken;
      targets[k] = kIgnoreIndex;
      positions[k] = k - filled;
      doc_ids[k] = segment;
    }
  ++state_.windows;
  return filled;
}

int64_t Mixture::place_document(int64_t filled, int64_t segment, int64_t* tokens, int64_t* targets,
                                int64_t* positions, int64_t* doc_ids, std::vector<int64_t>& source_tokens) {
  const int64_t T = opts_.seq_len;
  const auto si = static_cast<size_t>(state_.carry_source);
  const int64_t doc = state_.carry_doc;
  auto& src = *sources_[si];
  const bool masked = src.data.has_mask();
  // The part to place, as (context prefix [0, head), then [begin, end)); `peek` reads one token
  // past a cut pretraining document so the last target of the window is real.
  ConversationPiece part;
  int64_t peek = 0;
  if (masked) {
    part = src.piece_at(doc, state_.carry_offset);
    if (part.size() > T - filled) {
      if (filled == 0) fail("data: a conversation piece of {} tokens exceeds data.seq_len {}", part.size(), T);
      return 0;  // starts the next window whole
    }
  } else {
    const int64_t len = src.data.document_length(doc);
    const int64_t take = std::min(len - state_.carry_offset, T - filled);
    part = {0, state_.carry_offset, state_.carry_offset + take};
    peek = part.end < len ? 1 : 0;
  }
  const int64_t n = part.size(), with_peek = n + peek;
  // SFT corpora carry a loss mask: mask[t] says whether token t is a trained target (predicted
  // from t-1). The head is context only. The mask is read even for another rank's window: trained
  // token counts steer the mixture.
  auto& mask = mask_scratch_;
  mask.assign(with_peek, 1);
  if (masked) {
    std::fill_n(mask.begin(), part.head, 0);
    src.data.read_mask(doc, part.begin, part.end - part.begin, mask.data() + part.head);
  }
  int64_t trained = 0;
  for (int64_t k = 1; k < with_peek; ++k) trained += mask[k] != 0;
  if (tokens != nullptr) {
    auto& buf = ids_scratch_;
    buf.resize(with_peek);
    if (part.head > 0) src.data.read(doc, 0, part.head, buf.data());
    src.data.read(doc, part.begin, part.end - part.begin + peek, buf.data() + part.head);
    check_ids(si, doc, 0, buf.data(), part.head);
    check_ids(si, doc, part.begin, buf.data() + part.head, with_peek - part.head);
    for (int64_t k = 0; k < n; ++k) {
      tokens[filled + k] = buf[k];
      targets[filled + k] = k + 1 < with_peek && mask[k + 1] != 0 ? buf[k + 1] : kIgnoreIndex;
      positions[filled + k] = k;
      doc_ids[filled + k] = segment;
    }
  }
  source_tokens[si] += trained;
  // The deficit rule balances trained tokens: for pretraining that is every token placed, for SFT
  // only the masked-in targets.
  state_.sources[si].tokens += masked ? trained : n;
  if (auto next = masked ? src.piece_after(doc, part.begin) : std::nullopt) {
    state_.carry_offset = next->begin;
  } else if (!masked && part.end < src.data.document_length(doc)) {
    state_.carry_offset = part.end;
  } else {
    state_.carry_doc = -1, state_.carry_source = -1, state_.carry_offset = 0;
  }
  return n;
}

PackedBatch Mixture::next_batch(int64_t batch, int rank, int world) {
  if (rank < 0 || rank >= world) fail("next_batch: rank {} outside world {}", rank, world);
  const int64_t T = opts_.seq_len;
  auto opts = at::TensorOptions().dtype(at::kLong);
  PackedBatch b;
  b.tokens = at::empty({batch, T}, opts);
  b.targets = at::empty({batch, T}, opts);
  b.positions = at::empty({batch, T}, opts);
  b.doc_ids = at::empty({batch, T}, opts);
  b.source_tokens.assign(sources_.size(), 0);
  std::vector<int64_t> ignored(sources_.size(), 0);
  int64_t longest = 0;
  for (int64_t g = 0; g < batch * world; ++g) {
    bool mine = g % world == rank;
    int64_t row = g / world;
    if (mine) {
      int64_t placed = fill_window(b.tokens[row].data_ptr<int64_t>(), b.targets[row].data_ptr<int64_t>(),
                                   b.positions[row].data_ptr<int64_t>(), b.doc_ids[row].data_ptr<int64_t>(),
                                   b.source_tokens);
      b.real_tokens += placed;
      longest = std::max(longest, placed);
    } else {
      fill_window(nullptr, nullptr, nullptr, nullptr, ignored);
    }
  }
  b.trained_tokens = std::accumulate(b.source_tokens.begin(), b.source_tokens.end(), int64_t{0});
  if (opts_.packing == Packing::Pad) {
    // Columns past the longest row are all padding: drop them. Multiples of 8 keep matmul shapes
    // friendly and limit the number of distinct shapes a run sees.
    const int64_t width = std::min(T, (longest + 7) / 8 * 8);
    for (at::Tensor* t : {&b.tokens, &b.targets, &b.positions, &b.doc_ids})
      *t = t->narrow(1, 0, std::max<int64_t>(width, 1)).contiguous();
  }
  return b;
}

const ShardManifest& Mixture::manifest(size_t source) const { return sources_.at(source)->data.manifest(); }

int64_t Mixture::max_vocab_size() const {
  int64_t v = 0;
  for (const auto& s : sources_) v = std::max(v, s->data.manifest().vocab_size);
  return v;
}

void Mixture::set_model_vocab(int64_t vocab_size) {
  for (size_t i = 0; i < sources_.size(); ++i) {
    auto& src = *sources_[i];
    src.id_limit = std::min(src.data.manifest().vocab_size, vocab_size);
    const auto& shards = src.data.manifest().shards;
    for (size_t k = 0; k < shards.size(); ++k) {
      if (shards[k].max_token_id < src.id_limit) continue;
      auto bad = src.data.first_id_at_least(k, src.id_limit);
      // The manifest's figure alone when the shard itself holds no such id (a corrupt manifest).
      if (!bad)
        fail("data.sources[{}] '{}' ({}): shard {} records max_token_id {}, outside the model's vocabulary of {} "
             "tokens; re-run prepare with the model's tokenizer",
             i, opts_.sources[i].name, opts_.sources[i].path.string(), shards[k].name, shards[k].max_token_id,
             src.id_limit);
      fail("{}: token id {} is outside the vocabulary of {} tokens (data.sources[{}] '{}', shard max_token_id {}); "
           "re-run prepare with the model's tokenizer",
           src.data.locate(bad->doc, bad->offset), bad->id, src.id_limit, i, opts_.sources[i].name,
           shards[k].max_token_id);
    }
  }
}

void Mixture::check_ids(size_t i, int64_t doc, int64_t offset, const int64_t* ids, int64_t count) const {
  const auto& src = *sources_[i];
  for (int64_t k = 0; k < count; ++k)
    if (ids[k] >= src.id_limit)
      fail("{}: token id {} is outside the vocabulary of {} tokens (data.sources[{}] '{}'); the shard is "
           "corrupt or was prepared with another tokenizer",
           src.data.locate(doc, offset + k), ids[k], src.id_limit, i, opts_.sources[i].name);
}

void Mixture::restore(const MixtureState& s) {
  if (s.sources.size() != sources_.size())
    fail("data state has {} sources but the config lists {}", s.sources.size(), sources_.size());
  state_ = s;
}

std::vector<double> Mixture::shares() const {
  int64_t total = 0;
  for (const auto& c : state_.sources) total += c.tokens;
  std::vector<double> out;
  for (const auto& c : state_.sources) out.push_back(total ? static_cast<double>(c.tokens) / total : 0.0);
  return out;
}

std::vector<PackedBatch> Mixture::validation_batches(int64_t batch, int64_t count) const {
  // A throwaway mixture whose "training" documents are the held-out ones, read in order.
  Mixture v = *this;
  v.state_ = MixtureState{};
  v.state_.sources.resize(sources_.size());
  bool any = false;
  for (auto& s : v.sources_) {
    auto copy = std::make_shared<Source>(*s);
    copy->train_docs = copy->val_docs;
    copy->cached_epoch = 0;
    copy->perm = copy->val_docs;  // epoch 0 in file order
    any = any || !copy->val_docs.empty();
    s = copy;
  }
  std::vector<PackedBatch> out;
  if (!any) return out;
  for (int64_t i = 0; i < count; ++i) out.push_back(v.next_batch(batch));
  return out;
}

nlohmann::json MixtureState::to_json() const {
  nlohmann::json src = nlohmann::json::array();
  for (const auto& c : sources) src.push_back({{"epoch", c.epoch}, {"position", c.position}, {"tokens", c.tokens}});
  return {{"sources", src}, {"windows", windows}, {"carry_source", carry_source},
          {"carry_doc", carry_doc}, {"carry_offset", carry_offset}};
}

MixtureState MixtureState::from_json(const nlohmann::json& j, size_t num_sources) {
  try {
    MixtureState s;
    for (const auto& c : j.at("sources"))
      s.sources.push_back({c.at("epoch").get<int64_t>(), c.at("position").get<int64_t>(), c.at("tokens").get<int64_t>()});
    if (s.sources.size() != num_sources)
      fail("data state has {} sources but the config lists {}", s.sources.size(), num_sources);
    s.windows = j.at("windows").get<int64_t>();
    s.carry_source = j.at("carry_source").get<int64_t>();
    s.carry_doc = j.at("carry_doc").get<int64_t>();
    s.carry_offset = j.at("carry_offset").get<int64_t>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint data state is malformed: {}", e.what());
  }
}

}  // namespace agenttune
