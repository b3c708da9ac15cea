#pragma once
// From the train config's data knobs to what the mixture runs: weights stated in samples or as an
// agent share (AgentTuning's eta, Agent-FLAN's 1 : 1) become trained-token weights, and epochs
// become a step count, using the prepared folders' manifests. The resolved config (what
// output_dir/config.yaml records) states only token weights and max_steps, so it reproduces the
// run without the conversion.
#include "agenttune/train/train_config.h"

namespace agenttune {

// Throws naming the source when a manifest is missing or a group the share needs is empty.
TrainConfig resolve_data_config(const TrainConfig& cfg);

// Sequences per optimizer step, all ranks: train.global_batch_sequences, or global_batch_tokens
// rounded up to whole sequences.
int64_t global_batch_sequences(const TrainConfig& cfg);

// The data stream a resolved config trains on (also what `agenttune inspect` shows).
MixtureOptions mixture_options(const TrainConfig& resolved);

}  // namespace agenttune
