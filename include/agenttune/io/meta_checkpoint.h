#pragma once
// Meta's original Llama-2 layout: `params.json` + `consolidated.NN.pth` model-parallel shards.
// Shards are merged (column-parallel weights along dim 0, row-parallel along dim 1, embeddings
// along dim 1) and wq/wk are permuted to the HF half-split RoPE layout, so the result is a plain
// HF-named TensorSource.
#include <filesystem>
#include <memory>

#include "agenttune/io/tensor_source.h"
#include "agenttune/model/llama_config.h"

namespace agenttune {

bool is_meta_checkpoint_dir(const std::filesystem::path& dir);

// params.json -> LlamaConfig (FFN size from multiple_of / ffn_dim_multiplier; vocab_size -1 is
// taken from the tok_embeddings shape).
LlamaConfig read_meta_params(const std::filesystem::path& dir);

std::unique_ptr<TensorSource> open_meta_checkpoint(const std::filesystem::path& dir,
                                                   const LlamaConfig& config);

}  // namespace agenttune
