"""Writes tests/chat/golden/*.json from renderings spelled out by hand below, segment by segment,
from the rules in recipes.md §2 (not from the C++ code or its Jinja). Each segment is
(text, trained) or a special token ("<s>"/"</s>", trained); ids come from SentencePiece, one call per
stretch between special tokens, and a token is trained when it overlaps a trained segment.
The JSON keeps the pieces so a reviewer can read the mask token by token.

usage: make_golden.py LLAMA2_TOKENIZER.model OUT_DIR
"""
import json
import os
import sys

import sentencepiece as spm

from chat_oracle import overlap_mask, sp_tokenize

E, I = "\u0d46", "\u0d3f"  # Agent-FLAN's turn opener (id 30840) and assistant closer (id 30387)
S, EOS = ("<s>", False), ("</s>", True)

OS7 = [
    {"role": "user", "content": "You drive a Linux shell. Reply with Think: then Act: bash|answer(x)|finish.", "loss": None},
    {"role": "assistant", "content": "Ok.", "loss": False},
    {"role": "user", "content": "How many .log files are in /var/tmp?", "loss": None},
    {"role": "assistant", "content": "Think: count them.\n\nAct: bash", "loss": True},
    {"role": "tool", "content": "The output of the OS:\n3", "loss": None},
    {"role": "assistant", "content": "Think: the count is 3.\n\nAct: answer(3)", "loss": None},
]
TB42 = [
    {"role": "system", "content": "You may call: weather_now(city).", "loss": False},
    {"role": "user", "content": "Is it raining in Oslo?", "loss": False},
    {"role": "assistant", "content": "I should look up the current weather for Oslo.", "loss": True},
    {"role": "user", "content": "Which tool will you call?", "loss": False},
    {"role": "assistant", "content": "weather_now", "loss": False},
    {"role": "user", "content": "With what arguments?", "loss": False},
    {"role": "assistant", "content": "{\"city\": \"Oslo\"}", "loss": True},
]
TOOLBENCH = [
    {"role": "system", "content": "You are AutoGPT. Answer with Thought/Action/Action Input.", "loss": None},
    {"role": "user", "content": "\nIs it raining in Oslo?\nBegin!\n", "loss": None},
    {"role": "assistant", "content": "\nThought: check weather\nAction: now_for_weather\nAction Input: {\"city\": \"Oslo\"}", "loss": None},
    {"role": "tool", "content": "{\"error\": \"\", \"response\": \"rain\"}", "loss": None},
    {"role": "assistant", "content": "\nThought: \nAction: Finish\nAction Input: {\"return_type\": \"give_answer\", \"final_answer\": \"Yes.\"}", "loss": None},
]
SHAREGPT = [
    {"role": "user", "content": "Name a prime above 10.", "loss": None},
    {"role": "assistant", "content": "11.", "loss": None},
    {"role": "user", "content": "And one above 20?", "loss": None},
    {"role": "assistant", "content": "23.", "loss": None},
]
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions.")

CASES = {
    # Every Human/system turn and the "<|Assistant|>െ" header masked; content + ി trained (loss=true
    # turns only: "weather_now" has loss=false); the "\n " after ി masked.
    "agent-flan": (TB42, [
        S,
        ("<|Human|>" + E + "You may call: weather_now(city).\n ", False),
        ("<|Human|>" + E + "Is it raining in Oslo?\n ", False),
        ("<|Assistant|>" + E, False), ("I should look up the current weather for Oslo." + I, True), ("\n ", False),
        ("<|Human|>" + E + "Which tool will you call?\n ", False),
        ("<|Assistant|>" + E + "weather_now" + I + "\n ", False),
        ("<|Human|>" + E + "With what arguments?\n ", False),
        ("<|Assistant|>" + E, False), ("{\"city\": \"Oslo\"}" + I, True), ("\n ", False),
    ]),
    # AgentTuning's system folded into the first [INST]; "Ok." (loss=false) masked with its EOS;
    # the tool observation is a user turn; trained answers are " {answer} " + EOS.
    "agentlm": (OS7, [
        S, ("[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"
            "You drive a Linux shell. Reply with Think: then Act: bash|answer(x)|finish. [/INST]", False),
        (" Ok. ", False), ("</s>", False),
        S, ("[INST] How many .log files are in /var/tmp? [/INST]", False),
        (" Think: count them.\n\nAct: bash ", True), EOS,
        S, ("[INST] The output of the OS:\n3 [/INST]", False),
        (" Think: the count is 3.\n\nAct: answer(3) ", True), EOS,
    ]),
    # Only the final assistant message is trained: " {content}" + EOS; "Assistant:" masked.
    "toolllama": (TOOLBENCH, [
        S, ("System: You are AutoGPT. Answer with Thought/Action/Action Input.\n"
            "User: \nIs it raining in Oslo?\nBegin!\n\n"
            "Assistant: \nThought: check weather\nAction: now_for_weather\nAction Input: {\"city\": \"Oslo\"}\n"
            "Function: {\"error\": \"\", \"response\": \"rain\"}\n"
            "Assistant:", False),
        (" \nThought: \nAction: Finish\nAction Input: {\"return_type\": \"give_answer\", \"final_answer\": \"Yes.\"}", True),
        EOS,
    ]),
    # Fixed Vicuna system; " {answer}" + EOS trained after each "ASSISTANT:".
    "vicuna": (SHAREGPT, [
        S, (VICUNA_SYSTEM + " USER: Name a prime above 10. ASSISTANT:", False), (" 11.", True), EOS,
        ("USER: And one above 20? ASSISTANT:", False), (" 23.", True), EOS,
    ]),
}


def main():
    model, out_dir = sys.argv[1:3]
    sp = spm.SentencePieceProcessor(model_file=model)
    specials = {"<s>": sp.bos_id(), "</s>": sp.eos_id()}
    for name, (messages, segments) in CASES.items():
        text, spans = "", []
        for seg, trained in segments:
            if trained:
                spans.append((len(text), len(text) + len(seg)))
            text += seg
        ids, token_spans = sp_tokenize(sp, text, list(specials), specials)
        golden = {"template": name, "messages": messages, "text": text, "ids": ids,
                  "pieces": [sp.id_to_piece(i) for i in ids], "trained": overlap_mask(token_spans, spans)}
        with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
