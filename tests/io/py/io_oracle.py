"""Python-side oracle for tests/io: writes files with the reference libraries and checks ours.

Every tensor value is a closed-form function of its index so the C++ side can rebuild it:
    expected(k, shape, dtype) = (arange(numel) * 0.25 - k).reshape(shape).to(dtype)
"""
import collections
import json
import sys
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# name -> (k, shape, dtype tag); shared with the C++ tests (keep in sync with kSpecs there).
SPECS = {
    "a.f32": (1, (3, 5), "F32"),
    "b.f16": (2, (7,), "F16"),
    "c.bf16": (3, (2, 3, 4), "BF16"),
    "d.scalar": (4, (), "F32"),
}


def expected(k, shape, tag):
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float32) * 0.25 - k).reshape(shape).to(DTYPES[tag])


def write_safetensors(out):
    from safetensors.torch import save_file
    save_file({n: expected(*s) for n, s in SPECS.items()}, out, metadata={"origin": "python"})


def check_safetensors(path):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        assert meta.get("format") == "pt", meta
        assert sorted(f.keys()) == sorted(SPECS), f.keys()
        for n, s in SPECS.items():
            t = f.get_tensor(n)
            e = expected(*s)
            assert t.dtype == e.dtype and t.shape == e.shape, (n, t.dtype, t.shape)
            assert torch.equal(t, e), n


def torch_save(out):
    # A real module state dict: an OrderedDict carrying _metadata, as transformers saves it.
    m = torch.nn.Module()
    for i, (n, s) in enumerate(SPECS.items()):
        m.register_buffer(f"t{i}", expected(*s))
    sd = m.state_dict()
    renamed = collections.OrderedDict((n, sd[f"t{i}"]) for i, n in enumerate(SPECS))
    renamed._metadata = sd._metadata
    # A view into a shared storage at an offset (what tied or sliced weights look like on disk).
    base = expected(5, (4, 6), "BF16")
    renamed["e.view"] = base[1:3]
    renamed["e.base"] = base
    torch.save(renamed, out)


def meta_checkpoint(out_dir):
    """Random HF-named weights -> 2-shard Meta checkpoint (inverse RoPE permutation) + hf.safetensors."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    dim, n_layers, n_heads, n_kv, vocab, mult, ffn_mult = 64, 2, 4, 2, 48, 32, 1.3
    hidden = int(ffn_mult * int(2 * 4 * dim / 3))
    hidden = mult * ((hidden + mult - 1) // mult)
    head_dim = dim // n_heads
    kv_dim = n_kv * head_dim
    r = lambda *s: torch.randn(*s).to(torch.bfloat16)
    hf = {"model.embed_tokens.weight": r(vocab, dim), "model.norm.weight": r(dim),
          "lm_head.weight": r(vocab, dim)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        hf.update({p + "self_attn.q_proj.weight": r(dim, dim), p + "self_attn.k_proj.weight": r(kv_dim, dim),
                   p + "self_attn.v_proj.weight": r(kv_dim, dim), p + "self_attn.o_proj.weight": r(dim, dim),
                   p + "mlp.gate_proj.weight": r(hidden, dim), p + "mlp.up_proj.weight": r(hidden, dim),
                   p + "mlp.down_proj.weight": r(dim, hidden), p + "input_layernorm.weight": r(dim),
                   p + "post_attention_layernorm.weight": r(dim)})

    def unpermute(w, heads):  # inverse of convert_llama_weights_to_hf.permute
        d1, d2 = w.shape
        return w.view(heads, 2, d1 // heads // 2, d2).transpose(1, 2).reshape(d1, d2)

    meta = {"tok_embeddings.weight": (hf["model.embed_tokens.weight"], 1),
            "norm.weight": (hf["model.norm.weight"], None), "output.weight": (hf["lm_head.weight"], 0),
            "rope.freqs": (torch.ones(head_dim // 2), None)}
    for i in range(n_layers):
        p, m = f"model.layers.{i}.", f"layers.{i}."
        meta.update({
            m + "attention.wq.weight": (unpermute(hf[p + "self_attn.q_proj.weight"], n_heads), 0),
            m + "attention.wk.weight": (unpermute(hf[p + "self_attn.k_proj.weight"], n_kv), 0),
            m + "attention.wv.weight": (hf[p + "self_attn.v_proj.weight"], 0),
            m + "attention.wo.weight": (hf[p + "self_attn.o_proj.weight"], 1),
            m + "feed_forward.w1.weight": (hf[p + "mlp.gate_proj.weight"], 0),
            m + "feed_forward.w3.weight": (hf[p + "mlp.up_proj.weight"], 0),
            m + "feed_forward.w2.weight": (hf[p + "mlp.down_proj.weight"], 1),
            m + "attention_norm.weight": (hf[p + "input_layernorm.weight"], None),
            m + "ffn_norm.weight": (hf[p + "post_attention_layernorm.weight"], None)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rank in range(2):
        shard = {n: (t if d is None else t.chunk(2, dim=d)[rank]).clone() for n, (t, d) in meta.items()}
        torch.save(shard, out / f"consolidated.{rank:02d}.pth")
    (out / "params.json").write_text(json.dumps(
        {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv, "multiple_of": mult,
         "ffn_dim_multiplier": ffn_mult, "norm_eps": 1e-5, "rope_theta": 500000.0, "vocab_size": -1}))
    save_file(hf, str(out / "hf.safetensors"))
    print(json.dumps({"intermediate_size": hidden, "vocab_size": vocab}))


if __name__ == "__main__":
    cmd, arg = sys.argv[1], sys.argv[2]
    {"write_safetensors": write_safetensors, "check_safetensors": check_safetensors,
     "torch_save": torch_save, "meta_checkpoint": meta_checkpoint}[cmd](arg)
