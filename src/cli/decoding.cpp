#include "decoding.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "agenttune/io/peft_adapter.h"
#include "agenttune/parallel/device.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune::cli {

void add_sampling_options(CLI::App* s, SamplingOptions& sampling, std::vector<int64_t>& stop_ids) {
  s->add_option("--max-new-tokens", sampling.max_new_tokens, "tokens to generate")->check(CLI::PositiveNumber);
  s->add_option("--temperature", sampling.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  s->add_option("--top-p", sampling.top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  s->add_option("--stop-id", stop_ids, "stop after this token id (repeatable; default: eos or the template's)");
  s->add_option("--seed", sampling.seed, "sampling seed");
}

void add_adapter_option(CLI::App* s, std::string& adapter) {
  s->add_option("--adapter", adapter,
                "LoRA adapter folder (adapter_config.json + adapter_model.safetensors, from `export --adapter-only` "
                "or peft's save_pretrained) to apply over --model")
      ->check(CLI::ExistingDirectory);
}

void apply_adapter_option(LlamaForCausalLM& model, const std::string& dir) {
  model->eval();
  if (dir.empty()) return;
  auto adapter = read_peft_adapter(dir);
  apply_peft_adapter(model, adapter, dir);
  log::info("adapter {}: LoRA rank {}, alpha {}{} on {} ({} tensors){}", dir, adapter.config.rank, adapter.config.alpha,
            adapter.config.rslora ? " (rsLoRA)" : "", fmt::join(adapter.config.target_modules, ", "),
            adapter.tensors.size(),
            adapter.base_model.empty() ? "" : fmt::format("; made for base {}", adapter.base_model));
}

LoadedModel load_decoding_model(const std::string& model_dir, const std::string& dtype, const std::string& device,
                                const std::string& adapter) {
  LoadOptions lo;
  if (!dtype.empty()) lo.dtype = parse_dtype(dtype);
  lo.device = decoding_device(device);
  auto loaded = load_pretrained(model_dir, lo);
  log::info("loaded {} ({}) in {:.2f}s", model_dir, to_string(loaded.format), loaded.seconds);
  apply_adapter_option(loaded.model, adapter);
  return loaded;
}

std::optional<std::filesystem::path> decoding_tokenizer(const std::string& model_dir, const std::string& given) {
  if (!given.empty()) return std::filesystem::path(given);
  const std::filesystem::path dir(model_dir);
  if (std::filesystem::exists(dir / "tokenizer.json") || std::filesystem::exists(dir / "tokenizer.model")) return dir;
  return std::nullopt;
}

std::vector<int64_t> with_eos_stops(std::vector<int64_t> stops, const std::vector<int64_t>& eos) {
  for (int64_t id : eos)
    if (std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  return stops;
}

std::string template_choices() { return fmt::format("{}", fmt::join(template_names(), ", ")); }

void add_device_option(CLI::App* s, std::string& device) {
  s->add_option("--device", device, "auto | cpu | cuda | cuda:N (default auto: the GPU when there is one)");
}

c10::Device decoding_device(const std::string& device) { return parallel::select_device(device, "--device", 0); }

std::unique_ptr<ChatTemplate> template_for_model(const std::string& name, Tokenizer& tok, const LlamaConfig& model,
                                                 const std::string& model_dir) {
  auto tmpl = make_template(name);
  prepare_tokenizer(*tmpl, tok);
  std::vector<int32_t> ids = {tok.bos_id(), tok.eos_id()};
  for (const auto& piece : tmpl->added_tokens()) ids.push_back(*tok.piece_to_id(piece));
  for (int32_t id : tmpl->stop_ids(tok)) ids.push_back(id);
  for (int32_t id : ids) {
    if (id < model.vocab_size) continue;  // -1 = the tokenizer has none; rendering says so if it needs it
    fail("{}: chat template {} needs token {} (id {}) but the model's vocabulary has {} tokens (ids 0..{}): the "
         "model was not trained or exported with this template; use --template with the one it was tuned with, "
         "or train on data prepared with `template: {}` and export with `export --template {}`",
         model_dir, name, tok.id_to_piece(id), id, model.vocab_size, model.vocab_size - 1, name, name);
  }
  return tmpl;
}

void TextStream::operator()(int64_t id) {
  ids_.push_back(static_cast<int32_t>(id));
  std::string text = tok_.decode(ids_);
  if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) return;
  if (text.size() > printed_) out_ << text.substr(printed_) << std::flush;
  printed_ = text.size();
}

}  // namespace agenttune::cli
