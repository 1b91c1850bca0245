"""Data: corpora, tokenizers, token shards and batches."""
