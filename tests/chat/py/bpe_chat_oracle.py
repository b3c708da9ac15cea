"""Oracle for the byte-level BPE chat templates (llama-3, qwen2.5): each conversation rendered by
transformers' apply_chat_template with the model's own published template
(tests/chat/fixtures/*.jinja) and the model's real tokenizer.json, independently of the C++ code.

usage: bpe_chat_oracle.py INPUT.json OUTPUT.json

INPUT: {"cases": [{"tokenizer": DIR, "published": FILE.jinja, "jinja": ours, "tools": [JSON TEXT] | null,
                   "messages": [{role, content, loss, name?, tool_calls?}], "gen_messages": [...],
                   "kwargs": {...} | absent}]}
  kwargs: extra template variables for every rendering, published and ours (Qwen3's enable_thinking).
  tool definitions and call arguments travel as JSON text and are parsed here with their key order
  kept (templates print them with tojson); they go to apply_chat_template as tools= and as
  tool_calls[].function.arguments dicts, the form transformers documents.
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
  spells_added  whether some message content, tool definition or call spells an added token of this tokenizer
  gen_text, gen_ids, hf_gen_ids  add_generation_prompt=True on gen_messages
A case with "expect_error": true gives only {"error", "ours_error"}: the exception text rendering
raises with the published template and with ours, or null where it renders.
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
        self.kwargs = {}  # the current case's template variables
        spec = json.load(open(f"{folder}/tokenizer.json", encoding="utf-8"))
        self.added = {t["content"]: t["id"] for t in spec["added_tokens"]}
        # The same model with no added tokens and no post-processor: pure text encoding.
        spec["added_tokens"], spec["post_processor"] = [], None
        self.plain = Tokenizer.from_str(json.dumps(spec))
        self.pattern = re.compile("|".join(re.escape(s) for s in sorted(self.added, key=len, reverse=True)))

    def render(self, template, messages, tools, gen=False, **kw):
        return self.hf.apply_chat_template(messages, chat_template=template, tools=tools, add_generation_prompt=gen,
                                           **self.kwargs, **kw)

    def tokenize(self, text, probe):
        """Ids and char spans of text: added tokens where probe (same length) spells them; (None, None)
        when the probe renders to another length (see probe_messages)."""
        if len(probe) != len(text):
            return None, None
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


def with_parsed_calls(messages):
    out = []
    for m in messages:
        m = dict(m)
        if "tool_calls" in m:
            m["tool_calls"] = [dict(c, function=dict(c["function"], arguments=json.loads(c["function"]["arguments"])))
                               for c in m["tool_calls"]]
        out.append(m)
    return out


def defused(value):
    # U+E000: one character, not whitespace (trim keeps it), not escaped by tojson (Llama-3.1 tool turns),
    # in every string a template may print: contents, tool definitions, call names and arguments (keys too).
    if isinstance(value, str):
        return value.replace("<", "\ue000")
    if isinstance(value, dict):
        return {defused(k): defused(v) for k, v in value.items()}
    if isinstance(value, list):
        return [defused(v) for v in value]
    return value


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def probe_messages(messages, published):
    """The messages to defuse for the probe. Qwen3's template reads markers in assistant content
    (it splits "<think>R</think>C" and re-writes the block itself), so defusing them would change
    the rendering: there the split is made here, exactly as the template makes it, and passed as
    reasoning_content, which renders the same text. A user turn that is a whole
    "<tool_response>...</tool_response>" (which Qwen3 does not count as a query) cannot be defused
    without changing the rendering either: tokenize() then gives no ids and only texts are compared."""
    if "reasoning_content" not in published:
        return messages
    out = []
    for m in messages:
        c = m["content"]
        if m["role"] == "assistant" and "</think>" in c:
            m = dict(m, reasoning_content=c.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n"),
                     content=c.split("</think>")[-1].lstrip("\n"))
        out.append(m)
    return out


def render_error(fam, template, messages, tools):
    """The exception text rendering raises, or None when it renders."""
    try:
        fam.render(template, messages, tools, tokenize=False)
    except Exception as e:  # jinja2's TemplateError from raise_exception, or any other failure, reported as text
        return f"{type(e).__name__}: {e}"
    return None


def main():
    src, dst = sys.argv[1:3]
    families, out = {}, []
    for case in json.load(open(src, encoding="utf-8"))["cases"]:
        if case["tokenizer"] not in families:
            families[case["tokenizer"]] = Family(case["tokenizer"])
        fam = families[case["tokenizer"]]
        fam.kwargs = case.get("kwargs") or {}
        published = open(case["published"], encoding="utf-8").read()
        msgs, ours = with_parsed_calls(case["messages"]), case["jinja"]
        tools = None if case.get("tools") is None else [json.loads(t) for t in case["tools"]]
        if case.get("expect_error"):
            out.append({key: render_error(fam, tpl, msgs, tools) for key, tpl in (("error", published), ("ours_error", ours))})
            continue
        text = fam.render(published, msgs, tools, tokenize=False)
        res = {"text": text, "ours_text": fam.render(ours, msgs, tools, tokenize=False)}
        res["hf_ids"] = fam.render(published, msgs, tools, tokenize=True, return_dict=True)["input_ids"]
        probe = probe_messages(msgs, published)
        ids, spans = fam.tokenize(text, fam.render(published, defused(probe), defused(tools), tokenize=False))
        res["spells_added"] = any(a in s for s in strings([probe, tools]) for a in fam.added)
        if not res["spells_added"]:
            assert ids == res["hf_ids"], f"oracle split disagrees with transformers: {ids} vs {res['hf_ids']}"
        (ours_text,), (gen_spans,) = render_jinja_template(
            conversations=[msgs], tools=tools, chat_template=ours, return_assistant_tokens_mask=True,
            bos_token=fam.hf.bos_token, eos_token=fam.hf.eos_token, **fam.kwargs)
        assert ours_text == res["ours_text"]
        res["ids"], res["mask"] = ids, None if ids is None else overlap_mask(spans, gen_spans)
        gmsgs = with_parsed_calls(case["gen_messages"])
        res["gen_text"] = fam.render(published, gmsgs, tools, gen=True, tokenize=False)
        res["hf_gen_ids"] = fam.render(published, gmsgs, tools, gen=True, tokenize=True, return_dict=True)["input_ids"]
        res["gen_ids"], _ = fam.tokenize(
            res["gen_text"], fam.render(published, defused(probe_messages(gmsgs, published)), defused(tools), gen=True,
                                        tokenize=False))
        out.append(res)
    json.dump({"cases": out}, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    main()
