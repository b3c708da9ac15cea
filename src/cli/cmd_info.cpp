// agenttune info --model DIR: what a model folder holds, its size and FLOPs per token.
#include <iostream>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/model/flops.h"
#include "commands.h"

namespace agenttune::cli {

Command info_command() {
  auto dir = std::make_shared<std::string>();
  auto seq = std::make_shared<int64_t>(4096);
  Command c;
  c.attach_fn = [=](CLI::App& app) {
    auto* s = app.add_subcommand("info", "Describe a model folder: shape, parameters, FLOPs per token");
    s->add_option("--model", *dir, "Hugging Face or Meta model folder")->required()->check(CLI::ExistingDirectory);
    s->add_option("--seq-len", *seq, "sequence length for the attention FLOPs")->check(CLI::PositiveNumber);
    return s;
  };
  c.run = [=] {
    auto fmt_kind = detect_weight_format(*dir);
    auto cfg = read_model_config(*dir, fmt_kind);
    auto flops = training_flops_per_token(cfg, *seq);
    std::cout << llama_config_to_json(cfg).dump(2) << "\n"
              << fmt::format("weights: {}\nparameters: {}\nmatmul parameters (N): {}\n"
                             "training FLOPs/token at seq {}: {:.4g} (6N+12LdT), {:.4g} (causal 6N+6LdT)\n",
                             to_string(fmt_kind), count_parameters(cfg), flops.matmul_params, *seq,
                             flops.full, flops.causal);
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
