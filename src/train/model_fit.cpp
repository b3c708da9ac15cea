#include "agenttune/train/model_fit.h"

#include "agenttune/io/hf_checkpoint.h"

namespace agenttune {

void check_seq_len_fits_model(const TrainConfig& cfg) {
  const auto& dir = cfg.model.init_from;
  if (dir.empty()) {
    cfg.model.shape.check_seq_len(cfg.data.seq_len, "model.shape");
    return;
  }
  // Only the config file is read here; the weights load later.
  const auto format = detect_weight_format(dir);
  const auto file = dir / (format == WeightFormat::MetaPth ? "params.json" : "config.json");
  read_model_config(dir, format).check_seq_len(cfg.data.seq_len, file.string());
}

}  // namespace agenttune
