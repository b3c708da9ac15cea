"""What the PEFT oracles share: a PEFT LoRA model over a transformers Llama whose adapters start
where agenttune's do.

agenttune draws each lora_A as PEFT does (torch.nn.init.kaiming_uniform_(a=sqrt(5))) from a CPU
generator seeded by the parameter's own name (include/agenttune/model/lora.h):
seed = splitmix64(init_seed ^ splitmix64(fnv1a64(name))), name as ours, e.g.
model.layers.0.self_attn.q_proj.lora_A. This module computes the same seeds independently, so the
initial values are checked, not copied.
"""
import math

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_M = (1 << 64) - 1
_PREFIX = "base_model.model."


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for c in text.encode():
        h = ((h ^ c) * 0x100000001B3) & _M
    return h


def adapter_seed(init_seed, name):
    return splitmix64(init_seed ^ splitmix64(fnv1a64(name)))


def lora_layers(model):
    """(our module name, LoraLayer) for every adapted projection, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name[len(_PREFIX):] if name.startswith(_PREFIX) else name, module


def peft_model(base, rank, alpha, rslora, init_seed, dropout=0.0, targets=TARGETS):
    """get_peft_model(LoraConfig(...)), then each A redrawn as agenttune draws it. PEFT's own init
    and scaling are checked first: B zero, A inside kaiming_uniform_'s bound, alpha/r or alpha/sqrt(r)."""
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), use_rslora=rslora,
                     bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(0)  # PEFT's own draws (checked, then replaced) from the global generator
    model = get_peft_model(base, cfg)
    scale = alpha / math.sqrt(rank) if rslora else alpha / rank
    with torch.no_grad():
        for name, layer in lora_layers(model):
            assert layer.scaling["default"] == scale, f"{name}: scaling {layer.scaling['default']}, expected {scale}"
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert a.dtype == torch.float32 and b.dtype == torch.float32, name
            assert torch.count_nonzero(b) == 0, f"{name}: PEFT's B does not start at zero"
            # (1 + 1e-6): a float32 draw may round past the double bound.
            bound = (1 + 1e-6) / math.sqrt(a.shape[1])
            assert a.abs().max() <= bound, f"{name}: PEFT's A is outside U(-1/sqrt(in), 1/sqrt(in))"
            g = torch.Generator().manual_seed(adapter_seed(init_seed, name + ".lora_A"))
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)
    return model


def adapter_params(model):
    """{our parameter name: tensor} of every lora_A / lora_B."""
    out = {}
    for name, layer in lora_layers(model):
        out[name + ".lora_A"] = layer.lora_A["default"].weight
        out[name + ".lora_B"] = layer.lora_B["default"].weight
    return out
