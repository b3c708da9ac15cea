#include "agenttune/io/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <set>

#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/meta_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/io/torch_bin.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/tokenizer/tokenizer_json.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;
using nlohmann::json;

std::string to_string(WeightFormat f) {
  switch (f) {
    case WeightFormat::Safetensors: return "safetensors";
    case WeightFormat::TorchBin: return "pytorch_model.bin";
    case WeightFormat::MetaPth: return "meta consolidated.pth";
  }
  return "?";
}

WeightFormat detect_weight_format(const fs::path& dir) {
  if (!fs::is_directory(dir)) fail("{}: not a model folder (does not exist or is not a directory)", dir.string());
  if (fs::exists(dir / "model.safetensors.index.json") || fs::exists(dir / "model.safetensors"))
    return WeightFormat::Safetensors;
  if (fs::exists(dir / "pytorch_model.bin.index.json") || fs::exists(dir / "pytorch_model.bin"))
    return WeightFormat::TorchBin;
  if (is_meta_checkpoint_dir(dir)) return WeightFormat::MetaPth;
  fail("{}: no weights found (expected model.safetensors[.index.json], pytorch_model.bin[.index.json] "
       "or Meta's params.json + consolidated.00.pth)", dir.string());
}

LlamaConfig read_model_config(const fs::path& dir, WeightFormat f) {
  if (f == WeightFormat::MetaPth) return read_meta_params(dir);
  return read_hf_config(dir / "config.json");
}

std::unique_ptr<TensorSource> open_weights(const fs::path& dir, WeightFormat f, const LlamaConfig& c) {
  switch (f) {
    case WeightFormat::Safetensors: return open_safetensors_dir(dir);
    case WeightFormat::TorchBin: return open_torch_bin_dir(dir);
    case WeightFormat::MetaPth: return open_meta_checkpoint(dir, c);
  }
  fail("unknown weight format");
}

namespace {
std::string shape_str(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

bool ignorable(const std::string& name) {
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}
}  // namespace

void check_weights(LlamaForCausalLM& model, const TensorSource& src) {
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    const auto& param = item.value();
    if (!src.contains(name))
      fail("{}: tensor '{}' is missing (the config expects it with shape {})", src.where(name), name,
           shape_str(param.sizes()));
    at::Tensor t = src.get(name);
    if (t.sizes() != param.sizes())
      fail("{}: tensor '{}' has shape {} but config.json implies {}", src.where(name), name,
           shape_str(t.sizes()), shape_str(param.sizes()));
    used.insert(name);
  }
  std::vector<std::string> extra;
  for (const auto& n : src.names())
    if (!used.count(n) && !ignorable(n)) extra.push_back(n);
  if (!extra.empty())
    log::warn("{} tensors in the checkpoint are not used by the model (first: '{}' in {})", extra.size(),
                 extra.front(), src.where(extra.front()));
}

void load_weights(LlamaForCausalLM& model, const TensorSource& src) {
  check_weights(model, src);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) item.value().copy_(src.get(item.key()));
}

std::vector<int64_t> generation_eos_token_ids(const fs::path& dir, const LlamaConfig& c) {
  const auto path = dir / "generation_config.json";
  if (!fs::exists(path)) return c.eos_token_ids();
  return eos_token_ids_from_json(read_json_file(path), path.string()).value_or(c.eos_token_ids());
}

LoadedModel load_pretrained(const fs::path& dir, const LoadOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  LoadedModel out;
  out.format = detect_weight_format(dir);
  LlamaConfig c = read_model_config(dir, out.format);
  if (opts.dtype) c.dtype = *opts.dtype;
  auto src = open_weights(dir, out.format, c);
  // Build on CPU with the target dtype, copy weights in, then move: no random init is wasted on
  // the device and the loaded tensors never exist twice there.
  out.model = LlamaForCausalLM(c);
  out.model->to(c.dtype);
  load_weights(out.model, *src);
  out.model->to(opts.device);
  out.eos_token_ids = generation_eos_token_ids(dir, c);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

NamedTensors hf_state_dict(LlamaForCausalLM& model, std::optional<c10::ScalarType> dtype) {
  NamedTensors out;
  for (auto& item : model->named_parameters()) {
    auto t = item.value().detach();
    if (dtype) t = t.to(*dtype);
    out.emplace_back(item.key(), t.cpu());
  }
  return out;
}

namespace {
// A copy stays writable even from a read-only source (a shared fixture), for later saves.
void copy_writable(const fs::path& from, const fs::path& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  fs::permissions(to, fs::perms::owner_write, fs::perm_options::add);
}

// The files beside a tokenizer.json that transformers reads with it (special tokens, chat template).
constexpr const char* kTokenizerCompanions[] = {"tokenizer_config.json", "special_tokens_map.json",
                                                "added_tokens.json"};
}  // namespace

void copy_tokenizer_files(const fs::path& from, const fs::path& dir) {
  if (fs::is_regular_file(from) && from.extension() == ".json") {
    // A byte-level BPE tokenizer.json (Llama-3, Qwen) is the tokenizer itself: copied as it is, with
    // its tokenizer_config.json (BOS/EOS/PAD names) and the other files beside it. Any other
    // tokenizer.json is refused naming the file (a SentencePiece model is copied from its .model).
    Tokenizer::load(from);
    if (fs::absolute(from) != fs::absolute(dir / "tokenizer.json")) copy_writable(from, dir / "tokenizer.json");
    for (const char* name : kTokenizerCompanions)
      if (fs::exists(from.parent_path() / name) && fs::absolute(from.parent_path()) != fs::absolute(dir))
        copy_writable(from.parent_path() / name, dir / name);
    return;
  }
  if (fs::is_regular_file(from)) {
    copy_writable(from, dir / "tokenizer.model");
    // tokenizer.json makes transformers' and vLLM's fast tokenizer give SentencePiece's ids
    // (tokenizer_json.h). The class must be the generic PreTrainedTokenizerFast, which loads the
    // file as it is: transformers 5's LlamaTokenizer keeps only its vocab and merges and puts back
    // a Metaspace pre-tokenizer that drops the dummy prefix before a leading space.
    std::string tokenizer_class = "PreTrainedTokenizerFast";
    try {
      write_tokenizer_json(from, dir);
    } catch (const Error& e) {
      // Still loadable: transformers then converts tokenizer.model itself (not always exactly).
      log::warn("{}; no tokenizer.json written", e.what());
      fs::remove(dir / "tokenizer.json");
      tokenizer_class = "LlamaTokenizer";
    }
    json cfg = {{"tokenizer_class", tokenizer_class}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                {"unk_token", "<unk>"}, {"add_bos_token", true}, {"add_eos_token", false},
                {"legacy", true}, {"clean_up_tokenization_spaces", false}, {"model_max_length", 4096}};
    write_file_atomic(dir / "tokenizer_config.json", cfg.dump(2) + "\n");
    return;
  }
  if (!fs::is_directory(from)) fail("{}: tokenizer not found (expected a .model file or a folder)", from.string());
  bool any = false;
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    if (fs::exists(from / name) && fs::absolute(from) != fs::absolute(dir)) {
      copy_writable(from / name, dir / name);
      any = true;
    }
  }
  for (const char* name : kTokenizerCompanions)
    if (fs::exists(from / name) && fs::absolute(from) != fs::absolute(dir)) copy_writable(from / name, dir / name);
  if (!any) log::warn("{}: no tokenizer files to copy", from.string());
}

void write_generation_config(const fs::path& dir, const LlamaConfig& c) {
  json gen = {{"bos_token_id", c.bos_token_id}, {"eos_token_id", llama_config_to_json(c).at("eos_token_id")}};
  if (c.pad_token_id) gen["pad_token_id"] = *c.pad_token_id;
  write_file_atomic(dir / "generation_config.json", gen.dump(2) + "\n");
}

void save_pretrained(LlamaForCausalLM& model, const fs::path& dir, const SaveOptions& opts) {
  fs::create_directories(dir);
  LlamaConfig c = model->config();
  if (opts.dtype) c.dtype = *opts.dtype;
  auto state = hf_state_dict(model, c.dtype);
  // Stale shards from an earlier save with another shard count would be picked up by globbing
  // loaders (vLLM), so remove them first.
  for (auto& e : fs::directory_iterator(dir)) {
    auto n = e.path().filename().string();
    if (n.rfind("model-", 0) == 0 && e.path().extension() == ".safetensors") fs::remove(e.path());
  }
  fs::remove(dir / "model.safetensors.index.json");
  fs::remove(dir / "model.safetensors");
  write_sharded_safetensors(dir, state, opts.max_shard_bytes);
  write_hf_config(dir / "config.json", c);
  write_generation_config(dir, c);
  if (opts.tokenizer_from) copy_tokenizer_files(*opts.tokenizer_from, dir);
}

}  // namespace agenttune
