// An export proves itself: our loader's reading of it equals the checkpoint (tensors exact after
// rounding, config equal, probe logits within the rounding's tolerance), and optionally so does
// transformers' reading (logits, and the tokenizer's ids on a probe text).
#include "export_verify.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "agenttune/util/seeded.h"

extern char** environ;

namespace agenttune {

double unit_roundoff(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return 0.0;            // the masters themselves: nothing rounds
    case c10::ScalarType::BFloat16: return 0x1p-8;       // 8 significand bits
    case c10::ScalarType::Half: return 0x1p-11;          // 11 significand bits
    default: fail("export: unsupported dtype {}", dtype_name(dtype));
  }
}

// Rounding a weight to the export dtype multiplies it by (1 + δ), |δ| <= u. A logit passes through
// 9 weight tensors per decoder layer (2 norms, q, k, v, o, gate, up, down) plus the embedding, the
// final norm and the head; to first order each contributes a relative error of at most about u,
// and independent roundings add in quadrature: |Δlogit| ≈ u·sqrt(9L + 3)·max|logit|. The factor 4
// covers the coherent part and heavy tails. Float32 exports hold the masters bit for bit, so their
// logits must be identical (tolerance 0). A corrupt tensor is caught by the exact tensor check
// whatever its effect on the logits; this bound catches a rounding that ruins the model (fp16
// overflow to inf, a config the weights do not fit).
double export_logits_tolerance(c10::ScalarType dtype, int64_t layers, double max_abs_logit) {
  return 4.0 * unit_roundoff(dtype) * std::sqrt(9.0 * static_cast<double>(layers) + 3.0) *
         std::max(1.0, max_abs_logit);
}

at::Tensor probe_tokens(const LlamaConfig& cfg) {
  const int64_t t = std::min<int64_t>(32, cfg.max_position_embeddings);
  auto tokens = at::empty({2, t}, at::kLong);
  auto acc = tokens.accessor<int64_t, 2>();
  Rng rng(16);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < t; ++i)
      acc[b][i] = i == 0 ? cfg.bos_token_id : static_cast<int64_t>(rng.below(static_cast<uint64_t>(cfg.vocab_size)));
  return tokens;
}

at::Tensor probe_logits(LlamaForCausalLM& model, const at::Tensor& tokens) {
  at::NoGradGuard ng;
  model->eval();
  return model->forward(tokens, default_positions(tokens.size(0), tokens.size(1), 0, at::kCPU)).to(at::kFloat);
}

namespace {

void check_config(const LlamaConfig& want, LlamaConfig got, const fs::path& shown) {
  got.dtype = want.dtype;  // loaded in float32 for the check
  auto diff = first_difference(llama_config_to_json(want), llama_config_to_json(got));
  if (!diff.empty()) fail_check(shown, "config.json reads back with another {} than the checkpoint's", diff);
}

struct TensorDiffs {
  size_t differing = 0;
  std::string first;
};

// Streams the reference's float32 weights: each must equal the loaded tensor once rounded to
// `dtype`; then the loaded model takes the float32 weight, becoming the reference's own model.
TensorDiffs compare_and_restore_masters(const WeightStream& reference, c10::ScalarType dtype, LlamaForCausalLM& model,
                                        const fs::path& shown) {
  std::map<std::string, at::Tensor> params;
  for (auto& p : model->named_parameters()) params.emplace(p.key(), p.value());
  TensorDiffs d;
  size_t seen = 0;
  at::NoGradGuard ng;
  reference(at::kFloat, [&](const std::string& name, const at::Tensor& t) {
    auto it = params.find(name);
    if (it == params.end()) fail_check(shown, "tensor {} is missing", name);
    if (it->second.sizes() != t.sizes() || !at::equal(it->second, t.to(dtype).to(at::kFloat))) {
      if (d.differing++ == 0) d.first = name;
    }
    if (it->second.sizes() == t.sizes()) it->second.copy_(t);
    ++seen;
  });
  if (seen != params.size()) fail_check(shown, "the export has {} tensors, the checkpoint {}", params.size(), seen);
  return d;
}

}  // namespace

ExportCheck verify_export(const WeightStream& reference, const LlamaConfig& cfg, const fs::path& dir,
                          const fs::path& shown, ProbeLogits& probe) {
  LoadOptions lo;
  lo.dtype = at::kFloat;  // float32 compute, so the logits measure the weights' rounding only
  LoadedModel loaded;
  try {
    loaded = load_pretrained(dir, lo);
  } catch (const Error& e) {
    fail_check(shown, "our loader cannot read what was written: {}", e.what());
  }
  auto& model = loaded.model;
  check_config(cfg, model->config(), shown);
  probe.tokens = probe_tokens(cfg);
  probe.logits = probe_logits(model, probe.tokens);
  auto diffs = compare_and_restore_masters(reference, cfg.dtype, model, shown);
  auto masters = probe_logits(model, probe.tokens);

  ExportCheck c;
  c.max_dlogit = (probe.logits - masters).abs().max().item<double>();
  c.max_abs_logit = masters.abs().max().item<double>();
  c.tolerance = export_logits_tolerance(cfg.dtype, cfg.num_hidden_layers, c.max_abs_logit);
  const bool logits_ok = std::isfinite(c.max_dlogit) && c.max_dlogit <= c.tolerance;
  if (!logits_ok || diffs.differing > 0)
    fail_check(shown,
               "probe logits max |Δlogit| = {:.3g} against the checkpoint's float32 weights (tolerance {:.3g} for {}){}",
               c.max_dlogit, c.tolerance, dtype_name(cfg.dtype),
               diffs.differing ? fmt::format("; {} tensor(s) differ from the checkpoint's rounded to {}, first {}",
                                             diffs.differing, dtype_name(cfg.dtype), diffs.first)
                               : "");
  log::info("export check: {} reads back with our loader with every tensor equal to the checkpoint's rounded to {} "
            "and the same config; probe logits max |Δlogit| = {:.3g} against the float32 weights (tolerance {:.3g}, "
            "max |logit| {:.3g})",
            shown.string(), dtype_name(cfg.dtype), c.max_dlogit, c.tolerance, c.max_abs_logit);
  return c;
}

// ---- Python oracles ----

namespace {

// Reads the export as transformers and vLLM users will: the class config.json names (LlamaForCausalLM,
// Qwen2ForCausalLM, Qwen3ForCausalLM) through AutoModelForCausalLM, in float32, and
// AutoTokenizer from the folder's own files. Exit 3: a package is missing.
constexpr const char* kTransformersCheck = R"PY(
import json, sys
try:
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    print(f"cannot import {e.name}: {e}", file=sys.stderr)
    sys.exit(3)
folder, probe_file, text_file, with_tokenizer, result_file = sys.argv[1:6]
probe = load_file(probe_file)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(input_ids=probe["tokens"]).logits
out = {"transformers": transformers.__version__,
       "max_abs_diff": (logits - probe["logits"]).abs().max().item()}
if with_tokenizer == "1":
    tok = AutoTokenizer.from_pretrained(folder)
    text = open(text_file, encoding="utf-8").read()
    out["ids"] = tok(text, add_special_tokens=False)["input_ids"]
json.dump(out, open(result_file, "w"))
)PY";

// Leading spaces, indented code, a tab, accents, CJK and an emoji: where tokenizers disagree.
constexpr const char* kProbeText = "  def f(x):\n    return x * 2\t# café, 東京, 🙂\n\nHello  world";

fs::path find_python(const fs::path& given, const std::string& what, const std::string& needs) {
  if (!given.empty()) {
    if (!fs::exists(given)) fail("--python {}: no such file", given.string());
    return given;
  }
  std::vector<fs::path> tried;
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) tried.push_back(exe.parent_path().parent_path() / ".venv/bin/python");  // build/agenttune
  tried.push_back(fs::current_path() / ".venv/bin/python");
  for (const auto& p : tried)
    if (fs::exists(p)) return p;
  fail("{} needs a Python with torch, safetensors and {}; none found (looked for {}{}). Run scripts/setup.sh, or pass "
       "--python PATH",
       what, needs, tried.front().string(), tried.size() > 1 ? " and " + tried.back().string() : "");
}

// Runs argv with stdout and stderr into `log`; the exit code, or 128 + signal; -1 if it cannot start.
int run_logged(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> av;
  for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, av[0], &fa, nullptr, av.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string tail(const fs::path& log) {
  std::string s = fs::exists(log) ? read_text_file(log) : "";
  return s.size() > 2000 ? "..." + s.substr(s.size() - 2000) : s;
}

void check_tokenizer_ids(const nlohmann::json& result, const fs::path& dir, const fs::path& shown, ExportCheck& check) {
  if (!result.contains("ids")) {
    log::info("export check: no tokenizer.model or tokenizer.json in the export, tokenizer ids not compared");
    return;
  }
  auto theirs = result.at("ids").get<std::vector<int32_t>>();
  // The folder as Tokenizer::load reads it: byte-level BPE from tokenizer.json, else tokenizer.model.
  auto ours = Tokenizer::load(dir).encode(kProbeText);
  if (theirs != ours) {
    size_t i = 0;
    while (i < ours.size() && i < theirs.size() && ours[i] == theirs[i]) ++i;
    fail_check(shown, "transformers' tokenizer gives other ids than ours on the probe text from position {} ({} ids vs "
               "our {})",
               i, theirs.size(), ours.size());
  }
  check.tokenizer_ids = ours.size();
}

fs::path scratch_path(const std::string& name) {
  return fs::temp_directory_path() / fmt::format("{}-{}", name, getpid());
}

// Transformers + peft read the adapter folder as users and vLLM do: PeftModel.from_pretrained over
// the base in float32. Exit 3: a package is missing.
constexpr const char* kPeftCheck = R"PY(
import json, sys
try:
    import peft
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except ImportError as e:
    print(f"cannot import {e.name}: {e}", file=sys.stderr)
    sys.exit(3)
base, folder, probe_file, result_file = sys.argv[1:5]
probe = load_file(probe_file)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
model = PeftModel.from_pretrained(model, folder).eval()
with torch.no_grad():
    logits = model(input_ids=probe["tokens"]).logits
theirs = set(get_peft_model_state_dict(model).keys())
with safe_open(folder + "/adapter_model.safetensors", "pt") as f:
    ours = set(f.keys())
json.dump({"peft": peft.__version__, "max_abs_diff": (logits - probe["logits"]).abs().max().item(),
           "tensors": len(ours), "missing": sorted(theirs - ours)[:3], "unexpected": sorted(ours - theirs)[:3]},
          open(result_file, "w"))
)PY";

void write_probe(const fs::path& file, const ProbeLogits& probe) {
  write_safetensors(file, {{"tokens", probe.tokens}, {"logits", probe.logits.contiguous()}});
}

}  // namespace

ScratchFolder::ScratchFolder(fs::path p) : path(std::move(p)) {
  fs::remove_all(path);
  fs::create_directories(path);
}

ScratchFolder::~ScratchFolder() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

nlohmann::json run_python_check(const fs::path& python, const std::string& what, const std::string& needs,
                                const char* script, const std::vector<std::string>& args, const fs::path& shown) {
  const auto py = find_python(python, what, needs);
  ScratchFolder work(scratch_path("agenttune-verify"));
  std::vector<std::string> argv = {py.string(), "-c", script};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back((work.path / "result.json").string());
  const int rc = run_logged(argv, work.path / "log.txt");
  if (rc == -1) fail("{}: cannot run {}", what, py.string());
  if (rc == 3)
    fail("{}: {} has no {} ({}); install scripts/requirements.txt into it or pass --python PATH", what, py.string(), needs,
         tail(work.path / "log.txt"));
  if (rc != 0) fail_check(shown, "{} cannot load it (exit {}):\n{}", needs, rc, tail(work.path / "log.txt"));
  return read_json_file(work.path / "result.json");
}

// Same weights, another implementation: float32 reassociation only (the oracle tests' 1e-4).
double python_logits_tolerance(const at::Tensor& logits) {
  return 1e-4 * std::max(1.0, logits.abs().max().item<double>());
}

namespace {

// The oracle's max |Δlogit| against ours (result "max_abs_diff") must be within the reassociation
// tolerance; recorded in `check`.
void check_oracle_logits(const nlohmann::json& result, const ProbeLogits& probe, const std::string& whose,
                         const fs::path& shown, ExportCheck& check) {
  const double diff = result.at("max_abs_diff").get<double>();
  const double tol = python_logits_tolerance(probe.logits);
  if (!std::isfinite(diff) || diff > tol)
    fail_check(shown, "{} logits differ from ours by {:.3g} (tolerance {:.3g})", whose, diff, tol);
  check.transformers_max_dlogit = diff;
  check.transformers_tolerance = tol;
}

}  // namespace

void verify_in_transformers(const fs::path& dir, const fs::path& shown, const fs::path& python,
                            const ProbeLogits& probe, ExportCheck& check) {
  ScratchFolder work(scratch_path("agenttune-probe"));
  write_probe(work.path / "probe.safetensors", probe);
  write_file_atomic(work.path / "probe.txt", kProbeText);
  const bool with_tokenizer = fs::exists(dir / "tokenizer.model") || fs::exists(dir / "tokenizer.json");
  auto result = run_python_check(python, "--verify transformers", "transformers", kTransformersCheck,
                                 {dir.string(), (work.path / "probe.safetensors").string(),
                                  (work.path / "probe.txt").string(), with_tokenizer ? "1" : "0"},
                                 shown);
  check_oracle_logits(result, probe, "transformers'", shown, check);
  const double diff = *check.transformers_max_dlogit, tol = *check.transformers_tolerance;
  check_tokenizer_ids(result, dir, shown, check);
  log::info("export check: transformers {} loads {}: logits max |Δlogit| = {:.3g} against ours (tolerance {:.3g}){}",
            result.value("transformers", "?"), shown.string(), diff, tol,
            check.tokenizer_ids ? fmt::format("; its tokenizer gives our {} ids on the probe text", *check.tokenizer_ids)
                                : "");
}

void verify_in_peft(const fs::path& base, const fs::path& dir, const fs::path& shown, const fs::path& python,
                    const ProbeLogits& probe, ExportCheck& check) {
  ScratchFolder work(scratch_path("agenttune-probe"));
  write_probe(work.path / "probe.safetensors", probe);
  auto result = run_python_check(python, "--verify transformers", "peft", kPeftCheck,
                                 {base.string(), dir.string(), (work.path / "probe.safetensors").string()}, shown);
  const auto missing = result.at("missing"), unexpected = result.at("unexpected");
  if (!missing.empty() || !unexpected.empty())
    fail_check(shown, "peft names the adapter's tensors otherwise: it expects {} and does not know {}", missing.dump(),
               unexpected.dump());
  check_oracle_logits(result, probe, "transformers + peft's", shown, check);
  const double diff = *check.transformers_max_dlogit, tol = *check.transformers_tolerance;
  log::info("export check: peft {} loads {} over the base (PeftModel.from_pretrained) with PEFT's own names for all {} "
            "tensors: logits max |Δlogit| = {:.3g} against ours (tolerance {:.3g})",
            result.value("peft", "?"), shown.string(), result.at("tensors").get<int64_t>(), diff, tol);
}

bool flip_tensor_signs(const fs::path& dir, const std::string& name) {
  for (auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    uint64_t header_len = 0;
    std::string tag;
    uint64_t begin = 0, end = 0;
    {
      auto file = SafetensorsFile::open(e.path());  // mapped: released before we write
      const auto* entry = file.find(name);
      if (!entry) continue;
      tag = entry->dtype_tag;
      begin = entry->begin;
      end = entry->end;
    }
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.read(reinterpret_cast<char*>(&header_len), 8);  // little-endian, as on every host we build for
    const uint64_t es = tag == "F32" ? 4 : 2;
    std::string bytes(end - begin, '\0');
    f.seekg(static_cast<std::streamoff>(8 + header_len + begin));
    f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    for (uint64_t i = es - 1; i < bytes.size(); i += es) bytes[i] = static_cast<char>(bytes[i] ^ 0x80);
    f.seekp(static_cast<std::streamoff>(8 + header_len + begin));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return static_cast<bool>(f);
  }
  return false;
}

}  // namespace agenttune
