"""Oracle for agenttune's multiple-choice likelihood scoring (src/eval/likelihood.cpp): runs
lm-evaluation-harness itself (pinned in scripts/requirements.txt) offline, on local task files, over
a tiny random Llama with the Llama-2 tokenizer, and writes what it scored.

usage: lm_eval_oracle.py TOKENIZER_MODEL OUT_DIR
Writes OUT_DIR/model/ (HF folder: weights + tokenizer), OUT_DIR/data/{letters_test,letters_dev,
texts_test}.jsonl, OUT_DIR/tasks/*.yaml and OUT_DIR/oracle.json:
  {"letters": {"shots": 2, "acc": .., "acc_norm": .., "loglik": [[per choice] per question]},
   "texts": {...}}  (questions in file order)
"""
import json
import os
import shutil
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

# MMLU's layout; subjects with '_' as in cais/mmlu. Answers spread over the letters.
LETTERS = [
    ("abstract_algebra", "Find the degree of the field extension Q(sqrt(2)) over Q.", ["0", "1", "2", "4"], 2),
    ("abstract_algebra", "How many elements does the group Z_6 have?", ["3", "6", "12", "36"], 1),
    ("abstract_algebra", "Is every cyclic group abelian?", ["Yes", "No", "Only finite ones", "Only infinite ones"], 0),
    ("abstract_algebra", "  The order of the identity element is  ", ["0", "2", "infinite", "1"], 3),
    ("abstract_algebra", "Which of these is a field?", ["Z", "Z_4", "Q", "N"], 2),
    ("abstract_algebra", "What is the kernel of the trivial homomorphism from G to H?", ["G", "{e}", "H", "empty"], 0),
]
LETTERS_DEV = [
    ("abstract_algebra", "What is 2 + 2 in Z_3?", ["0", "1", "2", "4"], 1),
    ("abstract_algebra", "Which group has order 1?", ["the trivial group", "Z_2", "S_3", "Q"], 0),
    ("abstract_algebra", "How many subgroups does Z_p have for a prime p?", ["1", "2", "3", "p"], 1),
]
# ARC-style: the choices themselves are the continuations, of different lengths, so acc_norm
# (log-likelihood per character) can disagree with acc; one non-ASCII choice counts characters.
TEXTS = [
    ("", "Which gas do plants take in for photosynthesis?", ["carbon dioxide", "oxygen", "nitrogen gas", "helium"], 0),
    ("", "What tool measures temperature?", ["a thermometer", "a ruler", "a barometer used at sea", "scales"], 0),
    ("", "Which is a mammal?", ["a whale", "a shark", "a trout", "an octopus that lives in a reef"], 0),
    ("", "What happens to water at 100 degrees Celsius at sea level?", ["it boils", "it freezes", "nothing at all", "it becomes café"], 0),
    ("", "Which planet is closest to the Sun?", ["Venus", "Mercury", "Earth", "Mars"], 1),
]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for subject, q, choices, answer in rows:
            rec = {"question": q, "choices": choices, "answer": answer}
            if subject:
                rec["subject"] = subject
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def make_model(tokenizer_model, out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    # A wide init spreads the next-token distribution, so choices differ by more than noise.
    cfg = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.3, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).eval().save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer_model, os.path.join(out, "tokenizer.model"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "legacy": True}, f)


LETTERS_YAML = """task: at_mc_letters
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/letters_test.jsonl
    dev: {data}/letters_dev.jsonl
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""

TEXTS_YAML = """task: at_mc_texts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/texts_test.jsonl
test_split: test
fewshot_split: test
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def run(model_dir, tasks_dir, task, shots):
    import lm_eval
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[task], num_fewshot=shots,
        batch_size=4, device="cpu", log_samples=True, task_manager=TaskManager(include_path=tasks_dir),
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    metrics = res["results"][task]
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    loglik = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    return {"shots": shots, "acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "loglik": loglik,
            "contexts": [s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple)) else None
                         for s in samples]}


def main():
    tokenizer_model, out = sys.argv[1:3]
    if not os.path.exists(tokenizer_model):
        print(f"{tokenizer_model} not found: no oracle (test_likelihood skips)")
        return
    model_dir, data, tasks = (os.path.join(out, d) for d in ("model", "data", "tasks"))
    os.environ.setdefault("HF_HOME", os.path.join(out, "hf_home"))
    for d in (data, tasks):
        os.makedirs(d, exist_ok=True)
    make_model(tokenizer_model, model_dir)
    write_jsonl(os.path.join(data, "letters_test.jsonl"), LETTERS)
    write_jsonl(os.path.join(data, "letters_dev.jsonl"), LETTERS_DEV)
    write_jsonl(os.path.join(data, "texts_test.jsonl"), TEXTS)
    with open(os.path.join(tasks, "at_mc_letters.yaml"), "w") as f:
        f.write(LETTERS_YAML.format(data=data))
    with open(os.path.join(tasks, "at_mc_texts.yaml"), "w") as f:
        f.write(TEXTS_YAML.format(data=data))
    oracle = {"letters": run(model_dir, tasks, "at_mc_letters", 2), "texts": run(model_dir, tasks, "at_mc_texts", 1)}
    with open(os.path.join(out, "oracle.json"), "w", encoding="utf-8") as f:
        json.dump(oracle, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
