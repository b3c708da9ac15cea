#pragma once
// Everything a checkpoint must hold for an exact resume, and the mapping to and from the
// checkpoint store. Each rank writes its fp32 master shards ("flat.<group>") and its AdamW
// moments ("optim.exp_avg.<group>", ...); meta.json holds the step, tokens, data-loader state
// (cursors, not a replay), RNG state, config, model config and the shard layout, which is what
// lets a checkpoint saved at one world size resume at another and export stream group by group.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "agenttune/data/mixture.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/train_progress.h"

namespace agenttune {

// Collective: every rank stages its file, rank 0 commits. Returns the checkpoint folder.
std::filesystem::path save_train_state(CheckpointStore& store, parallel::ShardedModel& model, const AdamW& opt,
                                       const Mixture& data, const TrainProgress& p, const nlohmann::json& config,
                                       parallel::ProcessGroup& dist);

// Restores model shards, optimizer and data state in place, whatever world size saved it. The
// model's config and the data plan (sources, their sizes and weights, seq_len, packing, ...) must
// equal the checkpoint's: a mismatch is an error naming the first differing key, never a silent
// load into the wrong shapes or a cursor into different data.
TrainProgress load_train_state(const std::filesystem::path& dir, parallel::ShardedModel& model, AdamW& opt,
                               Mixture& data);

// What must not change across a resume for the data cursors to mean the same documents.
nlohmann::json data_plan_json(const Mixture& data);

// The first key (a dotted path, "sources[1].weight") where two JSON values differ, or "".
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path = "");

// Reassembles checkpoint tensor `prefix + group` (unpadded, fp32) from the rank files that hold
// its slices: the pieces a sharded checkpoint was cut into, in rank order.
class CheckpointGroups {
 public:
  explicit CheckpointGroups(const LoadedCheckpoint& ck);
  at::Tensor full(const std::string& prefix, const std::string& group, int64_t numel) const;
  const nlohmann::json& layout() const { return layout_; }

 private:
  std::vector<std::unique_ptr<TensorSource>> ranks_;
  nlohmann::json layout_;
  std::filesystem::path dir_;
};

LlamaConfig checkpoint_model_config(const LoadedCheckpoint& ck);
nlohmann::json checkpoint_model_config_json(const LoadedCheckpoint& ck);

// Streams a checkpoint's weights group by group (one group's tensors in memory at a time) to
// `sink`, under HF names, cast to `dtype`.
void for_each_checkpoint_tensor(const LoadedCheckpoint& ck, c10::ScalarType dtype,
                                const std::function<void(const std::string&, const at::Tensor&)>& sink);

}  // namespace agenttune
