"""Oracle for agenttune's NF4 (include/agenttune/quant/nf4.h): what bitsandbytes stores and
reconstructs for a QLoRA base weight, written to files the C++ tests compare against.

usage: bnb_nf4_oracle.py OUT_DIR
Writes OUT_DIR/<case>.safetensors and OUT_DIR/cases.json (case -> shape, dtype).

Each case holds:
  weight         the input (float32 or bfloat16)
  codes          bnb's packed NF4 bytes, quantize_4bit(weight, blocksize=64, quant_type="nf4",
                 compress_statistics=True), flattened
  absmax_codes, absmax2, offset   the double quantisation of the absmax values (QuantState.absmax,
                 .state2.absmax, .offset) by bnb's device-agnostic ("default") kernels: an exact
                 nearest-code search, as bnb's CUDA kernel does
  dequant        bnb's dequantize_4bit of that state (in the weight's dtype), by its default kernel:
                 bnb 0.50.2's native CPU dequantize_4bit reads the wrong absmax when a row's length
                 is even but not a multiple of 64 (a 96x96 weight comes back with 4x the error); where
                 the row length is a multiple of 64 the two are checked equal
  cpu_absmax_codes, cpu_absmax2, cpu_dequant   the same from bnb's CPU kernel, which looks the
                 8-bit codes up in a 65,536-bin table and now and then picks the neighbouring code
                 (and keeps a zero absmax2 where the default kernel clamps it to 1e-38)
  nf4_code, dynamic_code  QuantState.code and QuantState.state2.code
bnb runs on the CPU here (bitsandbytes==0.50.2, pinned in scripts/requirements.txt), eager:
TorchDynamo is off, so no compiled kernel stands in for bnb's own.
"""
import copy
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import bitsandbytes
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file

# name: (shape, dtype, how the values are drawn)
CASES = {
    "normal_256x64": ((256, 64), torch.float32, "normal"),
    "mlp_1408x512": ((1408, 512), torch.float32, "kaiming"),
    "mlp_512x1408_bf16": ((512, 1408), torch.bfloat16, "kaiming"),
    "heavy_tail_300x128": ((300, 128), torch.float32, "student_t"),
    "odd_37x61": ((37, 61), torch.float32, "normal"),
    "tiny_3x5_bf16": ((3, 5), torch.bfloat16, "normal"),
    "zero_blocks_96x96": ((96, 96), torch.float32, "zero_blocks"),
}


def draw(shape, kind, gen):
    if kind == "normal":
        return torch.randn(shape, generator=gen) * 0.02
    if kind == "kaiming":  # nn.Linear's init: U(-1/sqrt(in), 1/sqrt(in))
        bound = 1.0 / shape[1] ** 0.5
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound
    if kind == "student_t":  # outliers, as trained weights have: absmax varies widely per block
        n = torch.randn(shape, generator=gen)
        chi = torch.randn((3,) + tuple(shape), generator=gen).pow(2).sum(0) / 3
        return n / chi.sqrt() * 0.01
    if kind == "zero_blocks":  # whole blocks of zeros (a pruned or zero-initialised slice)
        w = torch.randn(shape, generator=gen) * 0.05
        flat = w.view(-1)
        flat[:64] = 0
        flat[64 * 37: 64 * 40] = 0
        return w
    raise ValueError(kind)


def default_kernel(op, *args):
    """bnb's device-agnostic kernel for an op that also has a CPU kernel."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    return op.default.redispatch(keys, *args)


def bnb_dequantize(codes, state):
    """dequantize_4bit(codes, state) as bnb computes it on every device but its native CPU kernel."""
    absmax = F.dequantize_blockwise(state.absmax, state.state2)
    dflt = default_kernel(torch.ops.bitsandbytes.dequantize_blockwise, state.absmax, state.state2.absmax,
                          state.state2.code, 256, torch.float32)
    assert torch.equal(absmax, dflt)
    absmax += state.offset
    shape = list(state.shape)
    out = default_kernel(torch.ops.bitsandbytes.dequantize_4bit, codes, absmax, 64, "nf4", shape, state.dtype)
    if shape[-1] % 64 == 0:
        assert torch.equal(out, F.dequantize_4bit(codes, state))
    return out


def make_case(shape, dtype, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    w = draw(shape, kind, gen).to(dtype)
    codes, cpu_state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert cpu_state.nested and cpu_state.blocksize == 64 and cpu_state.state2.blocksize == 256
    # bnb's 4-bit step on the CPU is its default kernel already: the packed bytes are one answer.
    dcodes, absmax = default_kernel(torch.ops.bitsandbytes.quantize_4bit, w, 64, "nf4", torch.uint8)
    assert torch.equal(dcodes, codes)
    offset = absmax.mean()
    assert torch.equal(offset, cpu_state.offset)
    dyn = cpu_state.state2.code
    qabsmax, absmax2 = default_kernel(torch.ops.bitsandbytes.quantize_blockwise, absmax - offset, dyn, 256)
    # The default kernel is the nearest code (ties to the lower one): check against a direct search.
    target = torch.clamp((absmax - offset) / absmax2.repeat_interleave(256)[: absmax.numel()], -1, 1)
    dist = (target.unsqueeze(1) - dyn.unsqueeze(0)).abs()
    assert torch.all(dist.gather(1, qabsmax.long().unsqueeze(1)).squeeze(1) <= dist.min(1).values * (1 + 1e-6))
    # The CPU kernel's table lookup: off by at most one code step, except in a block of absmax
    # values all equal to their mean (absmax2 = 0), which it writes as code 0 (-0.99) times zero.
    live = (cpu_state.state2.absmax > 0).repeat_interleave(256)[: absmax.numel()]
    assert bool(((qabsmax.int() - cpu_state.absmax.int()).abs() <= 1)[live].all()), shape
    state = copy.deepcopy(cpu_state)
    state.absmax = qabsmax
    state.state2.absmax = absmax2
    dequant, cpu_dequant = bnb_dequantize(codes, state), bnb_dequantize(codes, cpu_state)
    return {
        "weight": w.contiguous(),
        "codes": codes.reshape(-1).contiguous(),
        "absmax_codes": qabsmax.contiguous(),
        "absmax2": absmax2.contiguous(),
        "offset": offset.reshape(1).float().contiguous(),
        "dequant": dequant.contiguous(),
        "cpu_absmax_codes": cpu_state.absmax.contiguous(),
        "cpu_absmax2": cpu_state.state2.absmax.contiguous(),
        "cpu_dequant": cpu_dequant.contiguous(),
        "nf4_code": cpu_state.code.float().contiguous(),
        "dynamic_code": dyn.float().contiguous(),
    }


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = {}
    for seed, (name, (shape, dtype, kind)) in enumerate(CASES.items()):
        tensors = make_case(shape, dtype, kind, 1000 + seed)
        save_file(tensors, os.path.join(out, name + ".safetensors"))
        differ = int((tensors["absmax_codes"] != tensors["cpu_absmax_codes"]).sum())
        cases[name] = {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                       "cpu_kernel_codes_differing": differ}
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
