#pragma once
// Everything a checkpoint must hold for an exact resume, and the mapping to and from the
// checkpoint store: model master weights ("model.<name>"), AdamW moments ("optim.<name>"), and in
// meta.json the step, tokens, data-loader state (cursors, not a replay), RNG state and config.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agenttune/data/mixture.h"
#include "agenttune/model/llama.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/optimizer.h"

namespace agenttune {

struct TrainProgress {
  int64_t step = 0;    // completed optimizer steps
  int64_t tokens = 0;  // tokens consumed (all ranks)
  int64_t nonfinite_in_a_row = 0;
};

std::filesystem::path save_train_state(CheckpointStore& store, LlamaForCausalLM& model, const AdamW& opt,
                                       const Mixture& data, const TrainProgress& p,
                                       const nlohmann::json& config_dump);

// Restores model, optimizer and data state in place; returns the progress counters.
TrainProgress load_train_state(const std::filesystem::path& dir, LlamaForCausalLM& model, AdamW& opt,
                               Mixture& data);

// The model config stored in a checkpoint (for export).
LlamaConfig checkpoint_model_config(const LoadedCheckpoint& ck);
// Model weights of a checkpoint under HF names (rank 0 of a single-rank checkpoint).
void load_checkpoint_weights(const LoadedCheckpoint& ck, LlamaForCausalLM& model);

}  // namespace agenttune
