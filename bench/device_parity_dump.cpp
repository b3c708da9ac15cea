// Our forward and backward on a device, written out for a transformers comparison on the same
// device (scripts/gpu/suite.sh): loads a Hugging Face folder in `--dtype` onto `--device`, runs the
// batch (BOS + ids (i * 37 + 11) % vocab, 2 rows x --seq tokens), takes the summed next-token loss
// through the training loss (loss_sum), backpropagates it, and writes the logits (fp32), the loss
// and every parameter's gradient (fp32, HF names prefixed "grad.") to one safetensors file.
//   bench_device_parity_dump --model DIR --out FILE.safetensors [--device cuda] [--dtype bfloat16] [--seq 64]
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"

using namespace agenttune;

int main(int argc, char** argv) {
  std::string model_dir, out, device = "cpu", dtype = "float32";
  int64_t seq = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_dir = v;
    else if (k == "--out") out = v;
    else if (k == "--device") device = v;
    else if (k == "--dtype") dtype = v;
    else if (k == "--seq") seq = std::stoll(v);
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  if (model_dir.empty() || out.empty()) return std::fprintf(stderr, "--model and --out are required\n"), 2;
  const c10::Device dev(device);
  LoadOptions lo;
  lo.dtype = dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  lo.device = dev;
  auto loaded = load_pretrained(model_dir, lo);
  auto& model = loaded.model;
  const int64_t V = model->config().vocab_size;
  auto tokens = ((at::arange(2 * seq, at::kLong) * 37 + 11) % V).view({2, seq});
  tokens.select(1, 0).fill_(1);
  auto positions = default_positions(2, seq, 0, at::kCPU);
  auto targets = labels_to_targets(tokens);
  at::Tensor logits;
  {
    at::NoGradGuard ng;
    logits = model->forward(tokens.to(dev), positions.to(dev)).to(at::kFloat).cpu();
  }
  auto loss = model->loss_sum(tokens.to(dev), positions.to(dev), targets.to(dev));
  loss.backward();
  NamedTensors dump = {{"logits", logits.contiguous()}, {"loss", loss.detach().to(at::kFloat).cpu().reshape({1})}};
  for (auto& p : model->named_parameters())
    dump.emplace_back("grad." + p.key(), p.value().grad().to(at::kFloat).cpu().contiguous());
  write_safetensors(out, dump);
  std::printf("wrote %s: logits [2, %lld, %lld], loss %.6f, %zu grads\n", out.c_str(), (long long)seq, (long long)V,
              loss.item<double>(), dump.size() - 2);
  return 0;
}
