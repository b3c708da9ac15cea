"""Oracle fixtures: small random LlamaForCausalLM models saved by transformers, with the numbers
agenttune must reproduce (logits, loss, every parameter's gradient, greedy generations); and the
other families the one Llama module computes (FAMILY_CASES: Llama-3 with llama3 RoPE scaling run
past its original context, Qwen2.5 with q/k/v biases, Qwen3 with q/k norms and an explicit head_dim).

usage: make_models.py OUT_DIR
Writes OUT_DIR/<case>/model/ (an HF folder, or a Meta folder for the meta case) and
OUT_DIR/<case>/ref.safetensors, plus OUT_DIR/cases.json listing the cases.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

CASES = {
    # name: (config kwargs, how to save)
    "mha_untied": (dict(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0), "safetensors"),
    "gqa_odd_vocab_sharded": (dict(vocab_size=1001, hidden_size=96, intermediate_size=256,
                                   num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                                   rope_theta=500000.0), "sharded"),
    "mqa_tied_linear_rope": (dict(vocab_size=777, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                  rope_theta=10000.0, tie_word_embeddings=True,
                                  rope_scaling={"rope_type": "linear", "factor": 2.0}), "safetensors"),
    "bin_shards": (dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                        num_attention_heads=8, num_key_value_heads=4), "bin"),
    "meta_mp2": (dict(vocab_size=640, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2), "meta"),
}


FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "qwen3": (Qwen3Config, Qwen3ForCausalLM)}

# name: (family, config kwargs, tokens per row, greedy prompt length). The Llama-3 case's original
# context (32) is shorter than its rows (48) and its greedy run (30 + 12): positions past it are
# computed with the rescaled frequencies, and head_dim 32 at theta 5e5 puts pairs in all three
# llama3 bands (kept, smoothed, divided by the factor).
FAMILY_CASES = {
    "llama3_rope_tied": ("llama", dict(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
                                       tie_word_embeddings=True,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 32}), 48, 30),
    "qwen2_biases": ("qwen2", dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False), 24, 6),
    "qwen3_qk_norm_tied": ("qwen3", dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True), 24, 6),
}


def save_bin(model, out):
    """pytorch_model-0000K-of-00002.bin + index, as older transformers wrote them."""
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = list(sd)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, os.path.join(out, fname))
        weight_map.update({k: fname for k in part})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(os.path.join(out, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    model.config.save_pretrained(out)


def unpermute(w, n_heads, dim1, dim2):
    """Inverse of the HF converter's permute: HF half-split rows -> Meta interleaved rows."""
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def save_meta(model, cfg, out, mp=2):
    """Meta's layout: params.json + consolidated.0N.pth, split model-parallel like Meta's code."""
    sd = model.state_dict()
    hd = cfg.hidden_size // cfg.num_attention_heads
    meta = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
            "output.weight": sd["lm_head.weight"]}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = sd[p + "self_attn.q_proj.weight"]
        k = sd[p + "self_attn.k_proj.weight"]
        meta[f"layers.{i}.attention.wq.weight"] = unpermute(q, cfg.num_attention_heads, q.shape[0], q.shape[1])
        meta[f"layers.{i}.attention.wk.weight"] = unpermute(k, cfg.num_key_value_heads, k.shape[0], k.shape[1])
        meta[f"layers.{i}.attention.wv.weight"] = sd[p + "self_attn.v_proj.weight"]
        meta[f"layers.{i}.attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        meta[f"layers.{i}.feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        meta[f"layers.{i}.feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
        meta[f"layers.{i}.feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        meta[f"layers.{i}.attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        meta[f"layers.{i}.ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    row_parallel = (".attention.wo.", ".feed_forward.w2.", "tok_embeddings.")  # split along dim 1
    for r in range(mp):
        shard = {}
        for name, t in meta.items():
            if t.dim() == 1:
                shard[name] = t.clone()
            else:
                dim = 1 if any(s in name for s in row_parallel) else 0
                shard[name] = t.chunk(mp, dim=dim)[r].clone()
        torch.save(shard, os.path.join(out, f"consolidated.{r:02d}.pth"))
    # multiple_of chosen so Meta's FFN formula lands on intermediate_size.
    params = {"dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
              "n_kv_heads": cfg.num_key_value_heads, "multiple_of": cfg.intermediate_size,
              "norm_eps": cfg.rms_norm_eps, "vocab_size": -1}
    with open(os.path.join(out, "params.json"), "w") as f:
        json.dump(params, f)


def make_case(name, kwargs, how, root, family="llama", seq=24, prompt_len=6):
    torch.manual_seed(abs(hash(name)) % (2**31))
    config_class, model_class = FAMILIES[family]
    cfg = config_class(**{**dict(rms_norm_eps=1e-5, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0), **kwargs})
    model = model_class(cfg).float()
    # Random norm weights and biases too (HF starts them at one and zero), so a loader that skips
    # them cannot pass.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            elif n.endswith(".bias"):
                p.uniform_(-0.1, 0.1)
    model.eval()
    out = os.path.join(root, name, "model")
    os.makedirs(out, exist_ok=True)
    if how == "safetensors":
        model.save_pretrained(out)
    elif how == "sharded":
        model.save_pretrained(out, max_shard_size="60KB")
    elif how == "bin":
        save_bin(model, out)
    elif how == "meta":
        save_meta(model, cfg, out)

    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(3, cfg.vocab_size, (2, seq), generator=g)
    labels = tokens.clone()
    labels[0, :5] = -100  # masked prompt: the loss must ignore these
    out_ = model(input_ids=tokens, labels=labels)
    out_.loss.backward()
    # Integer tensors go in as float32 (exact below 2**24): the reader under test takes floats only.
    ref = {"tokens": tokens.float(), "labels": labels.float(), "logits": out_.logits.detach().float().contiguous(),
           "loss": out_.loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        ref["grad." + n] = p.grad.detach().contiguous()
    prompt = tokens[:1, :prompt_len]
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=0)
    ref["greedy_prompt"] = prompt[0].float()
    ref["greedy_new"] = gen[0, prompt.shape[1]:].float()
    save_file(ref, os.path.join(root, name, "ref.safetensors"))


def main():
    root = sys.argv[1]
    os.makedirs(root, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for name, (kwargs, how) in CASES.items():
        make_case(name, kwargs, how, root)
    for name, (family, kwargs, seq, prompt_len) in FAMILY_CASES.items():
        make_case(name, kwargs, "safetensors", root, family, seq, prompt_len)
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump({**{n: how for n, (_, how) in CASES.items()}, **{n: "safetensors" for n in FAMILY_CASES}}, f)


if __name__ == "__main__":
    main()
