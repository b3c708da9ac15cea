"""Oracle for tests/cli/test_export_tokenizer.cpp: loads folders written by `agenttune export` the
way transformers and vLLM do (AutoTokenizer, fast tokenizer, the folder's own files only) and
reports what they give, next to Python sentencepiece on the same texts.

usage:
  export_tokenizer_oracle.py tokenize EXPORT_DIR SP_MODEL IN.jsonl OUT.json
      IN: one JSON string per line. OUT: {"info": {...}, "rows": [{sp_ids, sp_decoded, fast_ids,
      fast_split_ids, fast_decoded}]}: fast_ids with the default settings (control-token strings in
      the text are matched as special tokens), fast_split_ids with split_special_tokens=True.
  export_tokenizer_oracle.py stress EXPORT_DIR SP_MODEL N SEED
      Not run by the tests (minutes): N random concatenations of vocabulary pieces, N more with
      whitespace runs mixed in, compared with split_special_tokens=True; prints the counts and the
      first differences.
  export_tokenizer_oracle.py chat IN.json OUT.json
      IN: {"exports": {template: dir}, "cases": [{template, messages, gen_messages}]}.
      OUT: {"cases": [{text, ids, assistant_masks, gen_ids, text_ids, text_gen_ids}]}:
      apply_chat_template with the exported chat template (return_assistant_tokens_mask=True) and
      add_generation_prompt=True; text_ids/text_gen_ids the same renderings tokenized with
      agenttune's rule that message content is text (see content_as_text_ids).
"""
import json
import re
import sys

import sentencepiece as spm
from transformers import AutoTokenizer


def load(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast, f"{folder}: AutoTokenizer did not give a fast tokenizer ({type(tok).__name__})"
    return tok


def tokenize(folder, sp_model, src, dst):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tok = load(folder)
    texts = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    fast = tok(texts, add_special_tokens=False)["input_ids"]
    fast_split = tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    rows = []
    for text, f, fs in zip(texts, fast, fast_split):
        ids = sp.encode(text)
        rows.append({"sp_ids": ids, "sp_decoded": sp.decode(ids), "fast_ids": f, "fast_split_ids": fs,
                     "fast_decoded": tok.decode(fs)})
    backend = tok.backend_tokenizer
    info = {
        "class": type(tok).__name__,
        "config_class": json.load(open(f"{folder}/tokenizer_config.json"))["tokenizer_class"],
        "normalizer": str(backend.normalizer),
        "pre_tokenizer": str(backend.pre_tokenizer),
        "special": {k: [getattr(tok, k), getattr(tok, k + "_id")] for k in ("bos_token", "eos_token", "unk_token")},
        "hi_with_special": tok("hi")["input_ids"],
        "vocab_size": len(tok),
    }
    json.dump({"info": info, "rows": rows}, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


def stress(folder, sp_model, n, seed):
    import random

    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tok = load(folder)
    rng = random.Random(int(seed))
    pieces = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(sp.get_piece_size())
              if not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i))]
    spaces = [" ", "  ", "   ", "    ", "        ", "\t", "\n", "\n    "] * 200
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(int(n))]
    texts += ["".join(rng.choice(pieces + spaces) for _ in range(rng.randint(1, 12))) for _ in range(int(n))]
    fast = tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    bad = [(t, f) for t, f in zip(texts, fast) if f != sp.encode(t)]
    print(f"{len(texts)} strings, {len(texts) - len(bad)} equal, {len(bad)} differ")
    for t, f in bad[:10]:
        print(repr(t), sp.encode(t, out_type=str), tok.convert_ids_to_tokens(f))


def content_as_text_ids(tok, msgs, add_generation_prompt):
    """agenttune's rule with the exported tokenizer alone: render with the exported chat template,
    take as control tokens only the special tokens the template itself wrote (where they still
    appear when every "<" in the content is defused to U+0001, same length), and tokenize each
    stretch between them with split_special_tokens=True (one call per stretch, as the template's
    legacy SentencePiece tokenization does)."""
    kw = dict(tokenize=False, add_generation_prompt=add_generation_prompt)
    text = tok.apply_chat_template(msgs, **kw)
    probe = tok.apply_chat_template([dict(m, content=m["content"].replace("<", "\x01")) for m in msgs], **kw)
    assert len(probe) == len(text)
    specials = sorted(tok.all_special_tokens + [t.content for t in tok.added_tokens_decoder.values()],
                      key=len, reverse=True)
    ids, pos = [], 0
    for m in re.finditer("|".join(re.escape(t) for t in specials), probe):
        if m.start() > pos:
            ids += tok(text[pos:m.start()], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids.append(tok.convert_tokens_to_ids(m.group(0)))
        pos = m.end()
    if pos < len(text):
        ids += tok(text[pos:], add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids


def chat(src, dst):
    spec = json.load(open(src, encoding="utf-8"))
    toks = {name: load(folder) for name, folder in spec["exports"].items()}
    out = []
    for case in spec["cases"]:
        tok = toks[case["template"]]
        msgs = case["messages"]
        enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        gen = tok.apply_chat_template(case["gen_messages"], tokenize=True, return_dict=True,
                                      add_generation_prompt=True)
        out.append({"text": tok.apply_chat_template(msgs, tokenize=False), "ids": enc["input_ids"],
                    "assistant_masks": enc["assistant_masks"], "gen_ids": gen["input_ids"],
                    "text_ids": content_as_text_ids(tok, msgs, False),
                    "text_gen_ids": content_as_text_ids(tok, case["gen_messages"], True)})
    json.dump({"cases": out}, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    if sys.argv[1] == "tokenize":
        tokenize(*sys.argv[2:6])
    elif sys.argv[1] == "stress":
        stress(*sys.argv[2:6])
    elif sys.argv[1] == "chat":
        chat(*sys.argv[2:4])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
