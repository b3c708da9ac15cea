"""The oracle for a YAML eos_token_id list written by `init` (tests/config/test_init_config.cpp):
transformers reads the folder's config.json and generation_config.json, saves both again, and prints
the end-of-sequence ids it read.

usage: hf_eos_round_trip.py MODEL_DIR OUT_DIR  -> {"config": ..., "generation": ...} on the last line
"""
import json
import sys

from transformers import AutoConfig, GenerationConfig


def main():
    src, out = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(src)
    generation = GenerationConfig.from_pretrained(src)
    config.save_pretrained(out)
    generation.save_pretrained(out)
    print(json.dumps({"config": config.eos_token_id, "generation": generation.eos_token_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
