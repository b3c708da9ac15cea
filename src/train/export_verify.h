#pragma once
// The checks behind export_checkpoint (train/export.h), on the not yet published folder. `shown` is
// the destination name used in messages: the temporary folder is gone by the time a user reads them.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "agenttune/model/llama.h"
#include "agenttune/train/export.h"
#include "agenttune/util/error.h"

namespace agenttune {

// The probe batch and the logits our loader's reading of the export gives on it (float32 compute).
struct ProbeLogits {
  at::Tensor tokens;  // [2, T] int64
  at::Tensor logits;  // [2, T, V] float32
};

// Two rows of seeded ids over the whole vocabulary, each starting with BOS: the same batch for
// every export of the same config.
at::Tensor probe_tokens(const LlamaConfig& cfg);
// The model's float32 logits on `tokens` (eval mode: an adapter's dropout is off).
at::Tensor probe_logits(LlamaForCausalLM& model, const at::Tensor& tokens);

// What an export must hold: every weight under its HF name, in a requested dtype, one at a time
// (a checkpoint's groups streamed from the rank files, or a merged model's parameters).
using TensorSink = std::function<void(const std::string&, const at::Tensor&)>;
using WeightStream = std::function<void(c10::ScalarType, const TensorSink&)>;

// Reloads `dir` with load_pretrained and checks it against `reference`: the config, every tensor
// (exactly the reference's float32 weight rounded to cfg.dtype) and the probe logits against the
// float32 weights (within export_logits_tolerance). Throws on a mismatch.
ExportCheck verify_export(const WeightStream& reference, const LlamaConfig& cfg, const std::filesystem::path& dir,
                          const std::filesystem::path& shown, ProbeLogits& probe);

// "export check failed, nothing written to <shown>: " + what.
template <typename... Args>
[[noreturn]] void fail_check(const std::filesystem::path& shown, fmt::format_string<Args...> f, Args&&... args) {
  fail("export check failed, nothing written to {}: {}", shown.string(), fmt::format(f, std::forward<Args>(args)...));
}

// Runs `script` (Python source) with `python` (empty: the .venv of the checkout this binary was
// built in, else ./.venv) as `python -c script args... RESULT_JSON` and returns what it wrote to
// RESULT_JSON. `what` names the check in messages ("--verify transformers"); `needs` the packages
// ("transformers", "peft and transformers"). Exit 3 from the script means an import failed: an
// error naming the Python and the package, never a silent skip; any other failure is a failed check.
nlohmann::json run_python_check(const std::filesystem::path& python, const std::string& what, const std::string& needs,
                                const char* script, const std::vector<std::string>& args,
                                const std::filesystem::path& shown);

// A folder removed, with everything in it, when this goes out of scope.
struct ScratchFolder {
  std::filesystem::path path;
  explicit ScratchFolder(std::filesystem::path p);
  ~ScratchFolder();
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
};

// Same weights, another implementation (transformers, peft): float32 reassociation only, the
// oracle tests' 1e-4 relative to the largest logit.
double python_logits_tolerance(const at::Tensor& logits);

// Loads `dir` in transformers with `python` (see run_python_check): its logits must match `probe`
// and its tokenizer our ids on a probe text.
void verify_in_transformers(const std::filesystem::path& dir, const std::filesystem::path& shown,
                            const std::filesystem::path& python, const ProbeLogits& probe, ExportCheck& check);

// Loads the adapter folder `dir` in peft over the float32 base model folder `base`
// (PeftModel.from_pretrained, as users and vLLM read adapters): its logits must match `probe`
// (ours on base + the adapter as our reader reads it), and PEFT's own state-dict names for the
// loaded adapter must be exactly the folder's tensor names (a file PEFT does not fully recognise
// loads with a mere warning, leaving projections unadapted).
void verify_in_peft(const std::filesystem::path& base, const std::filesystem::path& dir,
                    const std::filesystem::path& shown, const std::filesystem::path& python, const ProbeLogits& probe,
                    ExportCheck& check);

// Flips the sign bit of every element of tensor `name` in the folder's safetensors files, in
// place. False if no file holds it. The tests' stand-in for a writer bug or a bad disk.
bool flip_tensor_signs(const std::filesystem::path& dir, const std::string& name);

}  // namespace agenttune
