"""Oracle for the byte-level BPE chat templates (llama-3, qwen2.5): each conversation rendered by
transformers' apply_chat_template with the model's own published template
(tests/chat/fixtures/*.jinja) and the model's real tokenizer.json, independently of the C++ code.

usage: bpe_chat_oracle.py INPUT.json OUTPUT.json

INPUT: {"cases": [{"tokenizer": DIR, "published": FILE.jinja, "jinja": ours,
                   "messages": [{role, content, loss}], "gen_messages": [...]}]}
OUTPUT: {"cases": [{...}]} with, per case:
  text        apply_chat_template(tokenize=False) with the published template
  ours_text   the same with the C++ jinja() (must equal text: our Jinja renders like the published one)
  hf_ids      apply_chat_template(tokenize=True) with the published template, as transformers gives it
  ids         the published rendering tokenized with agenttune's rule: control tokens only where the
              template wrote them (found by rendering with "<" in message content defused), every
              stretch between them encoded with the added tokens switched off, so content that spells
              "<|im_end|>" stays text; asserted equal to hf_ids when no content spells an added token
  mask        1 for each token of ids overlapping a {% generation %} span of our jinja() (transformers'
              own span bookkeeping), offsets from tokenizers
  spells_added  whether some message content spells an added token of this tokenizer
  gen_text, gen_ids, hf_gen_ids  add_generation_prompt=True on gen_messages
"""
import json
import re
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import render_jinja_template


def overlap_mask(token_spans, spans):
    return [int(any(b < e2 and b2 < e for b2, e2 in spans)) for b, e in token_spans]


class Family:
    def __init__(self, folder):
        self.hf = AutoTokenizer.from_pretrained(folder)
        spec = json.load(open(f"{folder}/tokenizer.json", encoding="utf-8"))
        self.added = {t["content"]: t["id"] for t in spec["added_tokens"]}
        # The same model with no added tokens and no post-processor: pure text encoding.
        spec["added_tokens"], spec["post_processor"] = [], None
        self.plain = Tokenizer.from_str(json.dumps(spec))
        self.pattern = re.compile("|".join(re.escape(s) for s in sorted(self.added, key=len, reverse=True)))

    def render(self, template, messages, gen=False, **kw):
        return self.hf.apply_chat_template(messages, chat_template=template, add_generation_prompt=gen, **kw)

    def tokenize(self, text, probe):
        """Ids and char spans of text: added tokens where probe (same length) spells them."""
        assert len(probe) == len(text)
        ids, spans, pos = [], [], 0

        def stretch(begin, end):
            if begin < end:
                enc = self.plain.encode(text[begin:end], add_special_tokens=False)
                ids.extend(enc.ids)
                spans.extend((begin + b, begin + e) for b, e in enc.offsets)

        for m in self.pattern.finditer(probe):
            stretch(pos, m.start())
            ids.append(self.added[m.group(0)])
            spans.append((m.start(), m.end()))
            pos = m.end()
        stretch(pos, len(text))
        return ids, spans


def defused(messages):
    # U+E000: one character, not whitespace (trim keeps it), not escaped by tojson (Llama-3.1 tool turns).
    return [dict(m, content=m["content"].replace("<", "\ue000")) for m in messages]


def main():
    src, dst = sys.argv[1:3]
    families, out = {}, []
    for case in json.load(open(src, encoding="utf-8"))["cases"]:
        fam = families.setdefault(case["tokenizer"], None) or Family(case["tokenizer"])
        families[case["tokenizer"]] = fam
        published = open(case["published"], encoding="utf-8").read()
        msgs, ours = case["messages"], case["jinja"]
        text = fam.render(published, msgs, tokenize=False)
        res = {"text": text, "ours_text": fam.render(ours, msgs, tokenize=False)}
        res["hf_ids"] = fam.render(published, msgs, tokenize=True, return_dict=True)["input_ids"]
        ids, spans = fam.tokenize(text, fam.render(published, defused(msgs), tokenize=False))
        res["spells_added"] = any(a in m["content"] for m in msgs for a in fam.added)
        if not res["spells_added"]:
            assert ids == res["hf_ids"], f"oracle split disagrees with transformers: {ids} vs {res['hf_ids']}"
        (ours_text,), (gen_spans,) = render_jinja_template(
            conversations=[msgs], chat_template=ours, return_assistant_tokens_mask=True,
            bos_token=fam.hf.bos_token, eos_token=fam.hf.eos_token)
        assert ours_text == res["ours_text"]
        res["ids"], res["mask"] = ids, overlap_mask(spans, gen_spans)
        gmsgs = case["gen_messages"]
        res["gen_text"] = fam.render(published, gmsgs, gen=True, tokenize=False)
        res["hf_gen_ids"] = fam.render(published, gmsgs, gen=True, tokenize=True, return_dict=True)["input_ids"]
        res["gen_ids"], _ = fam.tokenize(res["gen_text"], fam.render(published, defused(gmsgs), gen=True, tokenize=False))
        out.append(res)
    json.dump({"cases": out}, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    main()
