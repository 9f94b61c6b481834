"""BERT's masked-LM corruption: select tokens, then 80% [MASK] / 10% random / 10% unchanged.

Selection is per token with probability `probability` (as in BERT and transformers'
DataCollatorForLanguageModeling) or, with `whole_word`, per word: all pieces of a word
are selected together. Special tokens and padding are never selected. Randomness comes
only from the `torch.Generator` passed in, so a (seed, step) pair fixes the masks.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100


class MaskedLMCorruption:
    def __init__(self, tokenizer: Any, probability: float, whole_word: bool = False):
        if tokenizer.mask_token_id is None:
            raise ValueError("masked LM needs a tokenizer with a mask token")
        self.probability = probability
        self.whole_word = whole_word
        self.mask_id = int(tokenizer.mask_token_id)
        vocab_size = len(tokenizer)
        self.special = torch.zeros(vocab_size, dtype=torch.bool)
        self.special[list(tokenizer.all_special_ids)] = True
        self.replacement_ids = torch.nonzero(~self.special).flatten()
        self.continues_word = _continuation_table(tokenizer, vocab_size) & ~self.special

    def __call__(self, input_ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted input ids, labels): labels hold the original id at selected positions, else -100."""
        maskable = ~self.special[input_ids]
        draws = torch.rand(input_ids.shape, generator=generator)
        if self.whole_word:
            # Every piece of a word reuses the draw of the word's first piece.
            # A word starts at a non-continuation piece, or right after a special token
            # (byte-level BPE's first word after [CLS]/<|endoftext|> has no "Ġ").
            is_special = self.special[input_ids]
            after_special = torch.zeros_like(is_special)
            after_special[:, 1:] = is_special[:, :-1]
            starts = ~self.continues_word[input_ids] | is_special | after_special
            word_index = torch.cumsum(starts.long(), dim=1) - 1
            first_piece = torch.zeros_like(input_ids)
            rows, cols = torch.nonzero(starts, as_tuple=True)
            first_piece[rows, word_index[rows, cols]] = cols
            draws = torch.gather(draws, 1, torch.gather(first_piece, 1, word_index.clamp(min=0)))
        selected = (draws < self.probability) & maskable
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

        action = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (action < 0.8)
        to_random = selected & (action >= 0.8) & (action < 0.9)
        random_pick = torch.randint(len(self.replacement_ids), input_ids.shape, generator=generator)
        corrupted = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        corrupted = torch.where(to_random, self.replacement_ids[random_pick], corrupted)
        return corrupted, labels


def _continuation_table(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """True for ids that continue a word: WordPiece's `##x`, or byte-level BPE pieces without `Ġ`."""
    vocab = tokenizer.get_vocab()
    table = torch.zeros(vocab_size, dtype=torch.bool)
    wordpiece = any(token.startswith("##") for token in vocab)
    for token, index in vocab.items():
        if index >= vocab_size:
            continue
        table[index] = token.startswith("##") if wordpiece else not token.startswith("Ġ")
    return table
