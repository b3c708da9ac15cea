#pragma once
// QLoRA's base read by slices: the engine asks for slices of each quantised projection's record
// (`<proj>.weight_nf4`, uint8 bytes, quant/nf4.h), which no checkpoint holds. This wraps the
// trainer's reader: such a slice is cut from the record of `<proj>.weight`, read whole (NF4 blocks
// and the absmax mean span the whole weight) as fp32 and quantised on the host; every other
// parameter passes through. Ranks whose slices cut the same record quantise it alike (the
// quantisation is deterministic), so each holds exactly its bytes of one record.
#include "agenttune/model/llama.h"
#include "agenttune/parallel/sharded_model.h"

namespace agenttune::parallel {

// `model`: after quantize_projections (its records name the weights and give their shapes).
// An empty `inner` (the model's own parameters hold the weights) stays empty.
WeightSlices nf4_weight_slices(WeightSlices inner, LlamaForCausalLM& model);

}  // namespace agenttune::parallel
