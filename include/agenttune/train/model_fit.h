#pragma once
// Checks between the model and the settings that can run before any weight is loaded, so a
// mismatch is an error at startup naming the key, not a failure (or a silent extrapolation, or a
// silently ignored model.shape) later in the run.
#include <filesystem>

#include "agenttune/model/llama_config.h"
#include "agenttune/train/train_config.h"

namespace agenttune {

// The architecture a run trains: model.shape, or model.init_from's config.json / params.json (only
// that file is read; the weights load later). A model.shape beside init_from must equal the
// folder's architecture (check_shape_matches). data.seq_len must fit its positions
// (max_position_embeddings times a linear RoPE scaling factor): the one place that rule is checked
// (TrainConfig::validate asks here for a fresh model's shape, naming the config file as `where`).
LlamaConfig fitted_architecture(const TrainConfig& cfg, const std::string& where = "");

// `cfg` with model.shape set to fitted_architecture(cfg), in fp32 (the master weights' dtype):
// the resolved config then records the architecture actually trained, whichever key gave it.
// Its vocab_size is the architecture's before the data's added tokens grow it (the trainer logs
// the growth and each checkpoint's model_config records the grown size), so that the resolved
// config loads again beside the same model.init_from.
TrainConfig with_fitted_architecture(const TrainConfig& cfg);

// Throws naming `model.shape.<key>`, both values and `file` (the folder's config.json or
// params.json) at the first field that changes the math where `shape` and the folder's
// `architecture` differ; dtype, initializer_range and the special token ids do not count.
void check_shape_matches(const LlamaConfig& shape, const LlamaConfig& architecture, const std::filesystem::path& file);

}  // namespace agenttune
