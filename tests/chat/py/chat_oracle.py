"""Oracle for tests/chat: renders conversations with transformers' apply_chat_template and
tokenizes them the way transformers does, independently of the C++ code.

usage: chat_oracle.py LLAMA2_TOKENIZER.model INPUT.json OUTPUT.json SCRATCH_DIR

INPUT: {"cases": [{"template", "jinja", "added_tokens", "messages": [{role, content, loss}],
                   "gen_messages": [...] or null}]}
OUTPUT: {"cases": [{...}]} with, per case:
  text        apply_chat_template(tokenize=False) with the C++ jinja()
  sp_ids      the rendered text tokenized with agenttune's rule: control tokens only where the
              template wrote them (found by rendering the messages with "<" in their content
              defused), one sp.encode per stretch between them, so content that spells "<s>" or
              "<|im_end|>" stays text. Without such content this is exactly
              apply_chat_template(tokenize=True) with transformers' SentencePiece-backed tokenizer
              (legacy=True), asserted here
  hf_sp_ids   apply_chat_template(tokenize=True) as transformers gives it (control-token spellings
              in content matched as control tokens)
  sp_mask     1 for each sp token overlapping a {% generation %} span (transformers' own span
              bookkeeping), offsets from SentencePiece itself
  fast_ids, fast_mask  the same with transformers' default (tokenizers-backed) LlamaTokenizer
  hf_mask     transformers' return_assistant_tokens_mask with the fast tokenizer, as it comes
  ref_text, ref_mask   llama-2-chat/agentlm: Meta's format as the HF hub Llama-2-chat template writes it
              (written here, not copied from C++), masks by diffing prefix renderings;
              chatml: a plain-Python rendering following Lemur's xchat train.py
  gen_text, gen_sp_ids, hf_gen_sp_ids  add_generation_prompt=True on gen_messages, tokenized
              both ways
"""
import json
import os
import re
import shutil
import sys

from transformers import AutoTokenizer
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils.chat_template_utils import render_jinja_template

AGENTLM_SYSTEM = "You are a helpful, respectful and honest assistant."

# The Llama-2-chat template as published with meta-llama/Llama-2-7b-chat-hf (Meta's format):
# system folded into the first user turn, "[INST] u [/INST] a </s>" per pair.
META_LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


class SentencePieceLlama(SentencePieceBackend):
    model_input_names = ["input_ids", "attention_mask"]


def trains(m):
    return m["role"] == "assistant" and m.get("loss") is not False


def meta_reference(messages, agentlm):
    """Text and trained char spans by rendering growing prefixes with META_LLAMA2."""
    msgs = [dict(m, role="user" if m["role"] == "tool" else m["role"]) for m in messages]
    if agentlm and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": AGENTLM_SYSTEM}] + msgs
    kw = dict(bos_token="<s>", eos_token="</s>")
    prev, spans = "", []
    for k in range(1, len(msgs) + 1):
        (cur,), _ = render_jinja_template(conversations=[msgs[:k]], chat_template=META_LLAMA2, **kw)
        assert cur.startswith(prev), "Meta template is not prefix-stable"
        if trains(msgs[k - 1]):
            spans.append((len(prev), len(cur)))
        prev = cur
    return prev, spans


def chatml_reference(messages):
    """Lemur xchat train.py: <|im_start|>{role}\\n{content.strip()}<|im_end|>\\n after BOS; assistant
    content + <|im_end|>\\n trained."""
    text, spans = "<s>", []
    for m in messages:
        text += "<|im_start|>" + m["role"] + "\n"
        body = m["content"].strip() + "<|im_end|>\n"
        if trains(m):
            spans.append((len(text), len(text) + len(body)))
        text += body
    return text, spans


def overlap_mask(token_spans, spans):
    return [int(any(b < e2 and b2 < e for b2, e2 in spans)) for b, e in token_spans]


def split_at_specials(text, specials, probe=None):
    """(chunk, is_special) pieces of text: special tokens are the specials found in probe (text
    itself unless given; same length), so a caller can say where control tokens really are."""
    probe = text if probe is None else probe
    assert len(probe) == len(text)
    pattern = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
    out, pos = [], 0
    for m in re.finditer(pattern, probe):
        out += [(text[pos:m.start()], False), (text[m.start():m.end()], True)]
        pos = m.end()
    return out + [(text[pos:], False)]


def sp_tokenize(sp, text, specials, special_ids, probe=None):
    """Ids and char spans: split at special tokens (see split_at_specials), one SentencePiece call
    per stretch."""
    ids, spans, pos = [], [], 0
    for chunk, special in split_at_specials(text, specials, probe):
        if not chunk:
            continue
        if special:
            ids.append(special_ids[chunk])
            spans.append((pos, pos + len(chunk)))
        else:
            raw = chunk.encode("utf-8")
            byte_to_char = [0] * (len(raw) + 1)
            b = 0
            for c, ch in enumerate(chunk):
                for _ in range(len(ch.encode("utf-8"))):
                    byte_to_char[b] = c
                    b += 1
            byte_to_char[len(raw)] = len(chunk)
            pieces = list(sp.encode(chunk, return_type="proto").pieces)
            for i, p in enumerate(pieces):
                begin, end = p.begin, p.end
                if begin == end:  # dummy prefix or leading bytes of a multi-byte char
                    nxt = next((q for q in pieces[i + 1:] if q.begin != q.end), None)
                    end = nxt.end if nxt else end
                    begin = min(begin, end)
                    if begin == end and end < len(raw):
                        end += 1
                ids.append(p.id)
                spans.append((pos + byte_to_char[begin], pos + byte_to_char[end]))
        pos += len(chunk)
    return ids, spans


def defused(messages):
    """The messages with every "<" in their content replaced by U+0001 (same length, not
    whitespace): rendered, they spell control tokens only where the template itself wrote them."""
    return [dict(m, content=m["content"].replace("<", "\x01")) for m in messages]


def spells_special(messages, specials):
    return any(s in m["content"] for m in messages for s in specials)


def main():
    model, src, dst, scratch = sys.argv[1:5]
    tokdir = os.path.join(scratch, "hf_tokenizer")
    os.makedirs(tokdir, exist_ok=True)
    shutil.copy(model, os.path.join(tokdir, "tokenizer.model"))
    with open(os.path.join(tokdir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "legacy": True}, f)
    cases = json.load(open(src, encoding="utf-8"))["cases"]
    out = []
    toks = {}
    for case in cases:
        added = tuple(case["added_tokens"])
        if added not in toks:
            slow = SentencePieceLlama(vocab_file=model, legacy=True, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>")
            fast = AutoTokenizer.from_pretrained(tokdir, legacy=True)
            if added:
                slow.add_tokens(list(added), special_tokens=True)
                fast.add_tokens(list(added), special_tokens=True)
            toks[added] = (slow, fast)
        slow, fast = toks[added]
        tmpl, msgs = case["jinja"], case["messages"]
        kw = dict(bos_token="<s>", eos_token="</s>")
        (text,), (gen_spans,) = render_jinja_template(
            conversations=[msgs], chat_template=tmpl, return_assistant_tokens_mask=True, **kw)
        assert slow.apply_chat_template(msgs, chat_template=tmpl, tokenize=False) == text
        res = {"text": text}

        # agenttune's rule: message content is text, control tokens are only those the template
        # wrote. transformers matches them anywhere in the rendered string; without control-token
        # spellings in the content the two are the same, which is checked here.
        hf_ids = slow.apply_chat_template(msgs, chat_template=tmpl, tokenize=True, return_dict=True)["input_ids"]
        specials = {t: slow.convert_tokens_to_ids(t) for t in ["<s>", "</s>", "<unk>", *added]}
        (probe,), _ = render_jinja_template(conversations=[defused(msgs)], chat_template=tmpl, **kw)
        ids, spans = sp_tokenize(slow.sp_model, text, list(specials), specials, probe)
        if not spells_special(msgs, specials):
            assert ids == hf_ids, f"oracle split disagrees with transformers: {ids} vs {hf_ids}"
        res["sp_ids"], res["sp_mask"], res["hf_sp_ids"] = ids, overlap_mask(spans, gen_spans), hf_ids

        enc = fast.apply_chat_template(msgs, chat_template=tmpl, tokenize=True, return_dict=True,
                                       return_assistant_tokens_mask=True)
        offs = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        assert offs["input_ids"] == enc["input_ids"]
        res["fast_ids"] = enc["input_ids"]
        res["fast_mask"] = overlap_mask(offs["offset_mapping"], gen_spans)
        res["hf_mask"] = enc["assistant_masks"]

        ref = None
        if case["template"] in ("llama-2-chat", "agentlm"):
            ref = meta_reference(msgs, case["template"] == "agentlm")
        elif case["template"] == "chatml":
            ref = chatml_reference(msgs)
        if ref:
            res["ref_text"] = ref[0]
            if ref[0] == text:
                res["ref_mask"] = overlap_mask(spans, ref[1])
        if case.get("gen_messages") is not None:
            g = case["gen_messages"]
            res["gen_text"] = slow.apply_chat_template(g, chat_template=tmpl, tokenize=False,
                                                       add_generation_prompt=True)
            hf_gen = slow.apply_chat_template(g, chat_template=tmpl, tokenize=True, add_generation_prompt=True)
            if hasattr(hf_gen, "keys"):
                hf_gen = hf_gen["input_ids"]
            (probe,), _ = render_jinja_template(conversations=[defused(g)], chat_template=tmpl,
                                                add_generation_prompt=True, **kw)
            res["gen_sp_ids"], _ = sp_tokenize(slow.sp_model, res["gen_text"], list(specials), specials, probe)
            if not spells_special(g, specials):
                assert res["gen_sp_ids"] == hf_gen, f"generation prompt: {res['gen_sp_ids']} vs {hf_gen}"
            res["hf_gen_sp_ids"] = hf_gen
        out.append(res)
    json.dump({"cases": out}, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    main()
