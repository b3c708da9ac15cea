#pragma once
// The model a training run starts from, without any rank holding a whole model in host memory:
// continuing from a checkpoint gives an unfilled model (its parameters allocated but never
// written, which costs no physical memory, and freed when the sharded model takes over) plus a
// reader of slices of the memory-mapped checkpoint, so each rank reads only its own shards.
// A fresh model is initialised whole (its random draws are defined over the whole model), and a
// Meta consolidated.*.pth folder is read whole: convert it once to a Hugging Face safetensors
// folder to load 70B-class models on every rank of a node.
#include <memory>
#include <string>

#include "agenttune/train/train_config.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/io/tensor_source.h"
#include "agenttune/model/llama.h"

namespace agenttune {

struct InitialModel {
  LlamaForCausalLM model{nullptr};
  parallel::WeightSlices weights;            // empty: the model's own parameters hold the weights
  std::shared_ptr<TensorSource> source;  // what `weights` reads
  std::string description;               // for the log
};

// `cfg` is resolved (with_fitted_architecture): its model.shape is the architecture, and only
// the weights are read from model.init_from.
InitialModel initial_model(const TrainConfig& cfg);

// Grows the vocabulary to `vocab` tokens for a chat template's added tokens; new rows of the
// embedding and head are the mean of the old ones (as grow_vocab does for a loaded model).
void grow_initial_vocab(InitialModel& m, int64_t vocab);

// model.adapter: adds the adapters (add_adapters: the base frozen, the adapters trainable, their
// initial values drawn from the adapter's init_seed) after any vocabulary growth, and reads their
// initial values from the model itself: a checkpoint being continued from has none. QLoRA then
// quantises the projections to NF4 records (quantize_projections), read by nf4_weight_slices.
void add_initial_adapters(InitialModel& m, const AdapterConfig& adapter);

}  // namespace agenttune
