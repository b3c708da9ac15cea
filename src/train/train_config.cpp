#include "agenttune/train/train_config.h"

#include <cmath>

#include "agenttune/parallel/device.h"
#include "agenttune/train/model_fit.h"
#include "agenttune/util/error.h"

namespace agenttune {

namespace {

void validate_source_format(const MixtureSource& s, const std::string& where) {
  if (s.format == SourceFormat::Prepared) {
    if (s.vocab_size != 0 || !s.tokenizer_sha256.empty())
      fail("{}: vocab_size and tokenizer_sha256 are for format: megatron; a prepared folder's manifest states them",
           where);
    return;
  }
  if (s.vocab_size <= 0)
    fail("{}: format: megatron needs vocab_size (the tokenizer's vocabulary; the files do not record it)", where);
  const bool hex64 = s.tokenizer_sha256.size() == 64 &&
                     s.tokenizer_sha256.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex64)
    fail("{}: format: megatron needs tokenizer_sha256, the sha256 of the tokenizer that made the files (64 "
         "lowercase hex digits, e.g. from `sha256sum tokenizer.model`), got '{}'",
         where, s.tokenizer_sha256);
}

}  // namespace

void TrainConfig::validate(const std::string& src) const {
  if (output_dir.empty()) fail("{}: output_dir is required", src);
  if (model.init_from.empty() && !model.shape)
    fail("{}: set model.shape (the architecture of a fresh model) or model.init_from (a folder to continue from)",
         src);
  if (model.shape) model.shape->validate(src + " (model.shape)");
  if (data.sources.empty()) fail("{}: data.sources must list at least one prepared corpus", src);
  for (size_t i = 0; i < data.sources.size(); ++i) {
    const auto& s = data.sources[i];
    if (s.path.empty()) fail("{}: data.sources[{}].path is required", src, i);
    if (!(s.weight > 0)) fail("{}: data.sources[{}].weight must be positive, got {}", src, i, s.weight);
    validate_source_format(s, fmt::format("{}: data.sources[{}]", src, i));
  }
  if (data.seq_len < 2) fail("{}: data.seq_len must be at least 2, got {}", src, data.seq_len);
  // With init_from, the folder's architecture decides; it is read when the run starts.
  if (model.init_from.empty()) fitted_architecture(*this, src);
  if (data.validation_fraction < 0 || data.validation_fraction >= 1)
    fail("{}: data.validation_fraction must be in [0, 1), got {}", src, data.validation_fraction);
  if (train.max_steps <= 0 && !(train.epochs > 0))
    fail("{}: train.max_steps must be positive (or train.epochs set), got {}", src, train.max_steps);
  if (train.epochs < 0 || !std::isfinite(train.epochs))
    fail("{}: train.epochs must be >= 0 (0 = use max_steps), got {}", src, train.epochs);
  if (data.agent_share) {
    if (!(*data.agent_share >= 0 && *data.agent_share <= 1))
      fail("{}: data.agent_share must be in [0, 1], got {}", src, *data.agent_share);
    for (size_t i = 0; i < data.sources.size(); ++i)
      if (data.sources[i].weight != 1.0)
        fail("{}: data.sources[{}].weight is set, but data.agent_share decides the weights; remove one of them", src,
             i);
  }
  if (train.micro_batch_size <= 0) fail("{}: train.micro_batch_size must be positive", src);
  if ((train.global_batch_sequences > 0) == (train.global_batch_tokens > 0))
    fail("{}: set exactly one of train.global_batch_sequences and train.global_batch_tokens", src);
  if (!(train.lr > 0)) fail("{}: train.lr must be positive, got {}", src, train.lr);
  if (train.min_lr_ratio < 0 || train.min_lr_ratio > 1)
    fail("{}: train.min_lr_ratio must be in [0, 1], got {}", src, train.min_lr_ratio);
  if (train.warmup_steps < 0) fail("{}: train.warmup_steps must be >= 0", src);
  if (train.warmup_start_ratio < 0 || train.warmup_start_ratio > 1)
    fail("{}: train.warmup_start_ratio must be in [0, 1], got {}", src, train.warmup_start_ratio);
  if (train.spike_zscore < 0 || !std::isfinite(train.spike_zscore))
    fail("{}: train.spike_zscore must be >= 0 (0 = no spike detection), got {}", src, train.spike_zscore);
  if (train.spike_window < 2) fail("{}: train.spike_window must be at least 2, got {}", src, train.spike_window);
  if (train.max_nonfinite_in_a_row < 1)
    fail("{}: train.max_nonfinite_in_a_row must be at least 1 (the non-finite steps in a row that stop the run), got {}",
         src, train.max_nonfinite_in_a_row);
  if (train.max_rollbacks < 1)
    fail("{}: train.max_rollbacks must be at least 1 (the rollbacks to one checkpoint that stop the run), got {}", src,
         train.max_rollbacks);
  if (train.log_interval <= 0) fail("{}: train.log_interval must be positive", src);
  if (train.eval_interval > 0 && data.validation_fraction == 0 && !eval)
    fail("{}: train.eval_interval {} evaluates the validation loss on held-out documents or the `eval:` section, "
         "but data.validation_fraction is 0 (none are held out) and there is no `eval:` section; set one of them "
         "(e.g. data.validation_fraction: 0.01) or train.eval_interval: 0",
         src, train.eval_interval);
  if (eval) {
    if (train.eval_interval <= 0)
      fail("{}: the `eval:` section runs every train.eval_interval steps, which is 0 (never); set "
           "train.eval_interval", src);
    eval->validate(src + ": eval");
  }
  if (checkpoint.interval <= 0) fail("{}: checkpoint.interval must be positive, got {}", src, checkpoint.interval);
  if (dist.timeout_s <= 0) fail("{}: dist.timeout_s must be positive", src);
  if (!(dist.connect_timeout_s > 0) || !std::isfinite(dist.connect_timeout_s))
    fail("{}: dist.connect_timeout_s must be positive, got {}", src, dist.connect_timeout_s);
  parallel::parse_device_spec(dist.device, src + ": dist.device");
  if (dist.single_rank_path == parallel::SingleRankPath::PerUnit &&
      (dist.strategy == parallel::ShardStrategy::NoShard || dist.strategy == parallel::ShardStrategy::ShardGradOp))
    fail("{}: dist.single_rank_path per_unit runs full_shard's per-unit path in a shard group of one; dist.strategy "
         "{} keeps parameters resident (use full_shard or hybrid_shard)",
         src, enum_name(dist.strategy));
  if (!(metrics.peak_tflops >= 0) || !std::isfinite(metrics.peak_tflops))
    fail("{}: metrics.peak_tflops must be >= 0 (0 = from the device), got {}", src, metrics.peak_tflops);
  if (model.compute_dtype == c10::ScalarType::Half)
    fail("{}: model.compute_dtype fp16 needs loss scaling, which training does not do; use bf16 (the same range as "
         "fp32, no scaling needed)", src);
  if (checkpoint.keep_last <= 0) fail("{}: checkpoint.keep_last must be positive", src);
  model.adapter.validate(src + ": model.adapter");
}

}  // namespace agenttune
