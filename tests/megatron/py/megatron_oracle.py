"""Writes Megatron indexed datasets with megatron-core's own IndexedDatasetBuilder, the writer
Megatron-LM's tools/preprocess_data.py uses, for agenttune's reader to be tested against.

    megatron_oracle.py OUT_DIR

OUT_DIR/<name>.bin/.idx and OUT_DIR/<name>.json (the documents, each a list of token ids, as
written) for: u16 (uint16, some documents of several sequences, as --split-sentences makes),
i32 (int32 ids above 65535), i64 (int64, which agenttune refuses), and train (uint16, documents
of repeated tokens for a training run).
"""
import json
import os
import sys
import warnings

import numpy
import torch

warnings.filterwarnings("ignore")
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder  # noqa: E402


def write(out, name, dtype, docs_of_sequences):
    prefix = os.path.join(out, name)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for doc in docs_of_sequences:
        for seq in doc:
            builder.add_item(torch.tensor(seq, dtype=torch.int64))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    docs = [[t for seq in doc for t in seq] for doc in docs_of_sequences]
    # Read back with Megatron's own reader: what it sees is what agenttune must see.
    ds = IndexedDataset(prefix)
    assert len(ds.document_indices) == len(docs) + 1
    with open(prefix + ".json", "w") as f:
        json.dump(docs, f)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = numpy.random.default_rng(7)

    def doc(max_id, sentences):
        return [rng.integers(0, max_id, size=int(rng.integers(1, 40))).tolist() for _ in range(sentences)]

    write(out, "u16", numpy.uint16, [doc(32000, int(rng.integers(1, 4))) for _ in range(60)] + [[]])
    write(out, "i32", numpy.int32, [doc(70000, 1) for _ in range(20)])
    write(out, "i64", numpy.int64, [doc(100, 1) for _ in range(3)])
    # A training corpus like tests/support/synthetic_corpus.h: document d repeats token 1000 + d,
    # ends in EOS = 2.
    train = []
    for d in range(80):
        n = int(rng.integers(20, 200))
        train.append([[1000 + d] * (n - 1) + [2]])
    write(out, "train", numpy.uint16, train)
    print("wrote", out)


if __name__ == "__main__":
    main()
