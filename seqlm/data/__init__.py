"""Corpus, tokenizers, token store, masking and batching shared by every task."""
