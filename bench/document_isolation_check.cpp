// Document isolation on a device, checked against its definition: the logits of a packed batch
// (several documents per row, positions restarting at each) equal, document by document, the
// logits of each document run alone. On CUDA in bf16 the packed forward takes the varlen flash
// kernel (cumulative lengths from document_spans, no mask); elsewhere the dense document mask.
// Prints one JSON line; exits 1 when a document differs by more than the tolerance.
//   bench_document_isolation_check [--device cpu|cuda]
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "agenttune/model/llama.h"

using namespace agenttune;

int main(int argc, char** argv) {
  std::string device = "cpu";
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--device") device = argv[i + 1];
  const c10::Device dev(device);
  const bool varlen = dev.is_cuda();  // in bf16 there, so attention_spec() picks the varlen kernel
  LlamaConfig c;
  c.vocab_size = 512, c.hidden_size = 256, c.intermediate_size = 688, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 256;
  c.dtype = varlen ? at::kBFloat16 : at::kFloat;
  auto model = make_llama(c, 3, dev);
  at::NoGradGuard ng;

  // Two rows of 128 tokens: documents of 40, 60, 28 and 100, 28 tokens.
  const std::vector<std::vector<int64_t>> rows = {{40, 60, 28}, {100, 28}};
  const int64_t T = 128;
  auto tokens = ((at::arange(2 * T, at::kLong) * 37 + 11) % c.vocab_size).view({2, T});
  auto positions = at::empty({2, T}, at::kLong), doc_ids = at::empty({2, T}, at::kLong);
  for (int64_t r = 0; r < 2; ++r) {
    int64_t t = 0, d = 0;
    for (int64_t len : rows[r]) {
      positions[r].narrow(0, t, len).copy_(at::arange(len, at::kLong));
      doc_ids[r].narrow(0, t, len).fill_(d++);
      t += len;
    }
  }
  auto packed = model->forward(tokens.to(dev), positions.to(dev), attention_spec(doc_ids, dev, c.dtype)).to(at::kFloat).cpu();

  double worst = 0, scale = 0;
  for (int64_t r = 0; r < 2; ++r) {
    int64_t t = 0;
    for (int64_t len : rows[r]) {
      auto alone = model->forward(tokens[r].narrow(0, t, len).unsqueeze(0).to(dev),
                                  at::arange(len, at::kLong).unsqueeze(0).to(dev))
                       .to(at::kFloat)
                       .cpu()[0];
      auto mine = packed[r].narrow(0, t, len);
      worst = std::max(worst, (mine - alone).abs().max().item<double>());
      scale = std::max(scale, alone.abs().max().item<double>());
      t += len;
    }
  }
  // bf16 kernels round differently for different sequence layouts: a few bf16 ulps of the logits.
  const double tol = (varlen ? 3e-2 : 1e-5) * std::max(1.0, scale);
  const bool ok = worst <= tol;
  std::printf("{\"device\": \"%s\", \"path\": \"%s\", \"max_abs_diff\": %.6g, \"tolerance\": %.6g, \"ok\": %s}\n",
              dev.str().c_str(), varlen ? "varlen flash (bf16)" : "dense document mask", worst, tol,
              ok ? "true" : "false");
  return ok ? 0 : 1;
}
