"""Tokenizer and pack stages: train a tokenizer on the train split, then pack token shards.

    glotta tokenizer RECIPE      # RUN_DIR/tokenizer/: tokenizer.json + tokenizer_config.json ...
    glotta pack RECIPE           # RUN_DIR/shards/: train.bin valid.bin test.bin meta.json

Modules (import the one you need; this package imports nothing heavy on its own, so
``glotta.tokenizer.shards`` stays cheap for the training loop):

- ``train``      ``train_tokenizer``: byte-level BPE (HF tokenizers) or Unigram (sentencepiece)
- ``unigram``    sentencepiece training and conversion to a ``tokenizers`` Unigram tokenizer.json
- ``fertility``  tokens per character / word / byte
- ``stage``      ``run_tokenizer``: the tokenizer stage entry
- ``shards``     binary token files with a header (``ShardWriter``, ``open_shard``)
- ``encode``     JSONL batches and byte ranges encoded to shard ids, here or in worker processes
- ``pack``       ``run_pack``: the pack stage entry
"""
