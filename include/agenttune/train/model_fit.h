#pragma once
// Checks between the model and the data settings that can run before any weight is loaded, so a
// mismatch is an error at startup naming the key, not a failure (or a silent extrapolation)
// later in the run.
#include "agenttune/train/train_config.h"

namespace agenttune {

// data.seq_len within the model's positions (max_position_embeddings, times a linear RoPE scaling
// factor): the shape of model.shape, or model.init_from's config.json / params.json.
void check_seq_len_fits_model(const TrainConfig& cfg);

}  // namespace agenttune
