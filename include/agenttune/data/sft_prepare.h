#pragma once
// SFT prepare: chat/agent datasets -> token shards with loss masks, one prepared folder per
// dataset, so the pretraining mixture, packing and trainer train SFT data unchanged except that
// a token's target is trained only where NAME.mask says so.
//
//   read (readers/dataset.h) -> holdout (data/heldout.h; OUTPUT/heldout.jsonl) -> max_samples ->
//   Agent-FLAN transforms (datasets with transform: true, pooled) -> render with the chat template -> mask = the template's `trained` vector ->
//   max_seq_len (overlength: truncate, drop or window; data/overlength.h) -> upsample ->
//   NAME.bin/.idx/.mask + manifest.json
//
// Units: max_samples and upsample count SAMPLES (conversations) of one dataset. The train
// config's mixture weights count TRAINED TOKENS across datasets; data/sft_mix.h converts a
// sample share such as AgentTuning's eta into those weights.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/config/scalars.h"
#include "agenttune/data/overlength.h"
#include "agenttune/data/token_shards.h"
#include "agenttune/readers/dataset.h"
#include "agenttune/transforms/native_tool_calls.h"
#include "agenttune/transforms/transforms.h"

namespace agenttune {

struct SftDatasetConfig {
  std::string name;                          // Conversation::source, report and error messages
  std::vector<std::filesystem::path> paths;  // files, or folders of *.json / *.jsonl
  DatasetFormat format = DatasetFormat::Auto;
  ReadPolicies policies;
  std::filesystem::path output;  // this dataset's prepared folder (a mixture source)
  // SAMPLES: keep a seeded random subset of this many conversations (0 = all), taken right after
  // reading and the hold-out. E.g. AgentTuning's ShareGPT GPT-3.5 : GPT-4 = 0.8 : 0.2 as two
  // datasets.
  int64_t max_samples = 0;
  // SAMPLES: each kept sample is written floor(upsample) times, plus a seeded subset of
  // round(frac(upsample) * kept) written once more (so 0.5 halves, 2.5 writes 2.5x, exactly).
  double upsample = 1.0;
  // Whether the Agent-FLAN transforms (SftPrepareConfig::transforms) apply. All datasets marked
  // so are pooled and transformed together, because format-following samples and negatives'
  // tool lists are drawn across the whole agent pool; general chat (ShareGPT) stays false.
  bool transform = false;
  // SAMPLES held out for eval, per task (data/heldout.h: AgentInstruct's six tasks from the id,
  // toolbench, agentflan, chat; negatives apart from positives): 0 = none; in (0, 1) = that share
  // of each task's records (rounded); a whole number >= 1 = that many of each task (all of a task
  // with fewer). Seeded, taken right after reading (before max_samples and the transforms), written
  // to OUTPUT/heldout.jsonl and never trained on.
  double holdout = 0;
  // How tool calls reach the template (transforms/native_tool_calls.h): native = ReAct steps with
  // a listed tool become structured calls the template prints in the family's format (llama-3,
  // qwen2.5, qwen3 only); text = as the data has them; auto = native where the template renders
  // tools and the dataset is not transformed, else text. Converted right after reading, so the
  // held-out records are native too.
  ToolCallForm tool_calls = ToolCallForm::Auto;
};

struct SftPrepareConfig {
  std::filesystem::path tokenizer;  // the base tokenizer: a SentencePiece .model, a tokenizer.json or a folder
  std::string chat_template = "llama-2-chat";  // YAML key `template`; chat/template.h lists them
  std::optional<std::string> default_system;    // unset = the template's own default
  std::vector<SftDatasetConfig> datasets;
  TransformConfig transforms;  // applied to the datasets with transform: true
  // Where the transforms' generated samples go (their own mixture sources); required when that
  // stage produces samples.
  std::filesystem::path format_following_output;
  std::filesystem::path negatives_output;
  // The generated negatives' hold-out, as datasets[].holdout (task agentflan, flagged negative),
  // written to negatives_output/heldout.jsonl.
  double negatives_holdout = 0;
  int64_t max_seq_len = 4096;  // tokens per rendered sample; 0 = no limit
  // A rendering longer than max_seq_len: truncate (to its last whole answer) | drop | window
  // (more samples, each the head plus later turns). The same rule as the trainer's data.overlength.
  Overlength overlength = Overlength::Truncate;
  uint64_t seed = 0;  // hold-outs, max_samples subsets, fractional upsampling (transforms: their own)
  int threads = 0;    // rendering threads; 0 = all cores. The output does not depend on it.
  int64_t shard_tokens = 256LL << 20;  // roll to a new shard after this many tokens
  bool progress = true;                // log one line per dataset

  void validate(const std::string& source) const;
};

struct SftDatasetReport {
  std::string name;
  std::filesystem::path output;
  ReadReport read;             // the reader's records, drops and mapped roles
  TransformReport tool_calls{"tool_calls"};  // the native conversion's counts (empty when text)
  int64_t samples_in = 0;      // conversations entering the pipeline (read, or generated)
  // Reason -> samples: max_samples, transforms (dropped by balancing), render_error (with
  // bad_record: drop), untrained (no trained token in the rendering), too_long (overlength: drop,
  // or no whole answer fits).
  std::map<std::string, int64_t> dropped;
  // "task" or "task negative" -> samples held out (data/heldout.h), not counted in kept or dropped
  std::map<std::string, int64_t> heldout;
  int64_t kept = 0;            // distinct samples kept
  OverlengthCounts overlength;  // what max_seq_len did to the rendered samples with trained tokens
  int64_t max_seq_len = 0;      // the limit it was fitted to
  int64_t documents = 0;       // written, after upsampling
  int64_t tokens = 0;          // written
  int64_t trained_tokens = 0;  // written mask ones
  ShardManifest manifest;
  int64_t heldout_total() const;
  // Records the reader saw (samples generated, for a transform's source): kept + held out + every drop.
  int64_t records_in() const;
  // Reason -> records: the reader's drops (read.dropped_records) and the pipeline's (dropped).
  std::map<std::string, int64_t> all_dropped() const;
  std::string summary_line() const;
  // "; tool calls: N conversations native (C calls), M text {reason: n, ...}", or "" when the
  // dataset's calls stayed text by setting.
  std::string tool_calls_line() const;
};

struct SftPrepareReport {
  std::vector<SftDatasetReport> datasets;  // config order, then format_following, negatives
  TransformReports transforms;
  double seconds = 0;  // in all, and per stage (render includes writing the shards)
  double read_seconds = 0, transform_seconds = 0, render_seconds = 0;
  std::string summary() const;
};

// A prepare that looks without writing (`agenttune inspect`): the same pipeline and report, and
// each distinct kept sample handed over as it would be written (after truncation, before
// upsampling copies).
struct SftPrepareHooks {
  bool write = true;  // false: no folders are created or touched
  std::function<void(const std::string& dataset, const Conversation&, const RenderedSample&)> on_kept;
};

// Throws agenttune::Error naming the dataset (and template) for unreadable data, a rendering the
// template cannot express (bad_record: error), or a dataset whose rendering trains no token.
SftPrepareReport prepare_sft(const SftPrepareConfig& config, const SftPrepareHooks& hooks = {});

// The samples `sample` becomes under a fit (data/overlength.h): one per piece, the head's tokens
// untrained. Exposed for tests.
std::vector<RenderedSample> fitted_samples(const RenderedSample& sample, const FittedConversation& fit);

template <class V>
void visit(V& v, SftDatasetConfig& d) {
  v("name", d.name);
  v("paths", d.paths);
  v("format", d.format);
  v.section("policies", d.policies);
  v("output", d.output);
  v("max_samples", d.max_samples);
  v("upsample", d.upsample);
  v("transform", d.transform);
  v("holdout", d.holdout);
  v("tool_calls", d.tool_calls);
}

template <class V>
void visit(V& v, SftPrepareConfig& c) {
  v("tokenizer", c.tokenizer);
  v("template", c.chat_template);
  v("default_system", c.default_system);
  v("datasets", c.datasets);
  v.section("transforms", c.transforms);
  v("format_following_output", c.format_following_output);
  v("negatives_output", c.negatives_output);
  v("negatives_holdout", c.negatives_holdout);
  v("max_seq_len", c.max_seq_len);
  v("overlength", c.overlength);
  v("seed", c.seed);
  v("threads", c.threads);
  v("shard_tokens", c.shard_tokens);
  v("progress", c.progress);
}

}  // namespace agenttune
