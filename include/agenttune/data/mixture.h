#pragma once
// The pretraining stream: documents drawn from several prepared sources so that each source's
// share of *trained tokens* tracks its weight (Lemur: code:text = 10:1), packed into windows of
// seq_len tokens. Deterministic and resumable:
// - each source walks a seeded permutation of its training documents, one per epoch; an
//   exhausted source starts a new, reshuffled epoch (and says so);
// - the next document comes from the source furthest below its target share (a deficit rule:
//   no randomness, so shares converge fast and the state is just counters);
// - the state is a few cursors per source plus the partly consumed document: small, never a replay.
// The stream does not depend on the world size: rank r of W takes windows r, r+W, ... of the same
// global sequence, so a run can resume at another world size.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/data/overlength.h"
#include "agenttune/data/packed_batch.h"
#include "agenttune/data/token_shards.h"

namespace agenttune {

enum class AttentionMode { Causal, Document };

template <>
struct EnumNames<AttentionMode> {
  static constexpr std::array<std::pair<AttentionMode, std::string_view>, 2> values = {
      {{AttentionMode::Causal, "causal"}, {AttentionMode::Document, "document"}}};
};

// pack: documents are concatenated into full windows (no compute wasted on padding).
// pad:  one document per window (a document longer than seq_len continues alone in the next
//       window), the rest padded; a micro-batch is cut to its longest row (rounded up to a
//       multiple of 8), so short conversations do not pay for seq_len. Padding is never trained
//       and, being after the document, never attended to by its tokens.
enum class Packing { Pack, Pad };

template <>
struct EnumNames<Packing> {
  static constexpr std::array<std::pair<Packing, std::string_view>, 2> values = {
      {{Packing::Pack, "pack"}, {Packing::Pad, "pad"}}};
};

// prepared: a folder `agenttune prepare` wrote (manifest.json + shards); megatron: a Megatron-LM
// indexed dataset, `path` being its prefix (PATH.bin + PATH.idx; data/megatron_dataset.h).
enum class SourceFormat { Prepared, Megatron };

template <>
struct EnumNames<SourceFormat> {
  static constexpr std::array<std::pair<SourceFormat, std::string_view>, 2> values = {
      {{SourceFormat::Prepared, "prepared"}, {SourceFormat::Megatron, "megatron"}}};
};

struct MixtureSource {
  std::string name;
  std::filesystem::path path;  // a prepared folder, or a Megatron prefix
  // The mixture meets it in trained tokens; a train config may state it in samples or through an
  // agent share instead (train/data_resolution.h resolves those to this).
  double weight = 1.0;
  bool agent = false;  // agent data, for data.agent_share (AgentTuning's eta)
  SourceFormat format = SourceFormat::Prepared;
  // Megatron files do not say which tokenizer made them, so the config does (required there,
  // refused for prepared folders, whose manifest says it): the vocabulary size, checked against
  // the model, and the tokenizer's sha256, checked against data.tokenizer when that is set.
  int64_t vocab_size = 0;
  std::string tokenizer_sha256;
};

// A data.sources[] entry of the train config (config/reader.h's visit() convention).
template <class V>
void visit(V& v, MixtureSource& s) {
  v("name", s.name);
  v("path", s.path);
  v("format", s.format);
  v("vocab_size", s.vocab_size);
  v("tokenizer_sha256", s.tokenizer_sha256);
  v("weight", s.weight);
  v("agent", s.agent);
}

struct MixtureOptions {
  std::vector<MixtureSource> sources;
  int64_t seq_len = 2048;
  uint64_t seed = 0;
  double validation_fraction = 0.0;  // documents held out of training (chosen by a seeded hash)
  AttentionMode attention = AttentionMode::Causal;
  Packing packing = Packing::Pack;
  // SFT conversations (sources with a loss mask) are never split across rows; one longer than
  // seq_len is fitted by this policy (data/overlength.h). Pretraining documents are cut freely.
  Overlength overlength = Overlength::Truncate;
  std::string tokenizer_sha256;  // when set, every source must have been made with it
  std::filesystem::path tokenizer;  // the file tokenizer_sha256 is of, named when a source differs
};

struct SourceCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // index into this epoch's permutation
  int64_t tokens = 0;    // trained tokens taken so far
  bool operator==(const SourceCursor&) const = default;
};

struct MixtureState {
  std::vector<SourceCursor> sources;
  int64_t windows = 0;  // windows produced so far (global)
  // The document being consumed when the last window ended: it continues in the next window.
  int64_t carry_source = -1, carry_doc = -1, carry_offset = 0;

  nlohmann::json to_json() const;
  static MixtureState from_json(const nlohmann::json& j, size_t num_sources);
  bool operator==(const MixtureState&) const = default;
};

class Mixture {
 public:
  explicit Mixture(MixtureOptions opts);

  // The next `batch` windows of the global stream that belong to `rank` of `world`, i.e. global
  // windows windows+rank, windows+rank+world, ...; the stream advances by batch*world windows.
  PackedBatch next_batch(int64_t batch, int rank = 0, int world = 1);

  const MixtureState& state() const { return state_; }
  void restore(const MixtureState& s);
  // Realised share of trained tokens per source so far.
  std::vector<double> shares() const;
  const MixtureOptions& options() const { return opts_; }
  // The largest vocabulary any source was prepared with (ChatML data adds tokens to Llama-2's).
  int64_t max_vocab_size() const;
  // Source i's manifest as opened (read once, at construction).
  const ShardManifest& manifest(size_t source) const;
  // The vocabulary of the model being trained: every shard's recorded max_token_id must be below
  // it (else an error naming the shard and the first such id), and from now on every window is
  // checked against it as well as against its source's vocab_size. Ids never reach the device
  // unchecked: an id past the embedding would otherwise fail mid-run inside the model.
  void set_model_vocab(int64_t vocab_size);

  // What data.overlength did to source i's conversations (all zero for pretraining sources).
  const OverlengthCounts& overlength(size_t source) const;
  // Rows one pass over every source's training documents fills: pretraining tokens / seq_len
  // (packed) or a row per seq_len of each document (padded); conversations' pieces packed greedily
  // in file order, whole, or one per row (padded). What train.epochs counts.
  double rows_per_pass() const;
  // Whether any source holds conversations (a loss mask): their rows may end in padding.
  bool has_conversations() const;
  // Source i's epochs finished so far (only the first is logged as it happens).
  int64_t epochs_done(size_t source) const { return state_.sources.at(source).epoch; }

  // A fresh, deterministic pass over the held-out documents, packed the same way.
  std::vector<PackedBatch> validation_batches(int64_t batch, int64_t count) const;

 private:
  struct Source;
  // Fills one window; out pointers may be null to skip materialising another rank's window.
  // Returns the tokens placed (seq_len unless padding).
  int64_t fill_window(int64_t* tokens, int64_t* targets, int64_t* positions, int64_t* doc_ids,
                   std::vector<int64_t>& source_tokens);
  size_t pick_source() const;
  std::pair<size_t, int64_t> next_document(size_t src);
  // Places the current (carried) document's next part at `filled`: all of what is left of a
  // pretraining document that fits, or one whole piece of a conversation. Returns the tokens
  // placed; 0 when a conversation's next piece does not fit in the rest of the window.
  int64_t place_document(int64_t filled, int64_t segment, int64_t* tokens, int64_t* targets, int64_t* positions,
                         int64_t* doc_ids, std::vector<int64_t>& source_tokens);
  void fit_conversations(size_t src);
  // Fails naming the shard file and position of the first id in `ids` (`count` tokens of document
  // `doc` of source `src` from `offset` on) that is outside the source's vocabulary.
  void check_ids(size_t src, int64_t doc, int64_t offset, const int64_t* ids, int64_t count) const;

  MixtureOptions opts_;
  std::vector<std::shared_ptr<Source>> sources_;
  MixtureState state_;
  // Reused by place_document for every document placed (no allocation per document).
  std::vector<uint8_t> mask_scratch_;
  std::vector<int64_t> ids_scratch_;
};

}  // namespace agenttune
