"""seqlm's own beam search for the seq2seq task (`seqlm.tasks.seq2seq_generation.generate`).

It is transformers 5's vectorised beam search (`GenerationMixin._beam_search`: the top 2·beams continuations
per input, finished hypotheses scored by log-probability / length**length_penalty, `early_stopping` and the
improvement heuristic that ends an input's search), step for step, with one change: an input whose search has
ended leaves the batch (its beams' cache, encoder states and mask rows dropped) instead of computing on until
the last input ends. Its hypotheses were frozen at that point in `generate` too (no candidate can enter them
any more), so the outputs and scores are the same (tested).

Contract of `beam_search`: per input row, `settings.num_return_sequences` (new tokens up to and including
the first of `stop`, score) pairs, best first. `seq2seq_decoding.supports` says when it applies.
"""

from __future__ import annotations

from typing import Any

import torch

from seqlm.config.generation import GenerationConfig
from seqlm.tasks.seq2seq_decoding import forced_tokens, logits_processors, model_steps

UNREACHABLE = -1.0e9  # transformers' score for a hypothesis that must not be chosen


def beam_search(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationConfig, stop: set[int]
) -> list[list[tuple[list[int], float]]]:
    """See the module docstring."""
    beams, inputs = settings.num_beams, input_ids.shape[0]
    device = input_ids.device
    steps = model_steps(model, input_ids, attention_mask, beams, settings.max_new_tokens)
    prompt_width = steps.history.shape[1]
    max_length = prompt_width + settings.max_new_tokens
    stop_ids = torch.tensor(sorted(stop), dtype=torch.long, device=device)
    candidates = max(2, 1 + len(stop)) * beams  # enough that `beams` of them can go on when the best ones end
    top_beams = torch.arange(candidates, device=device) < beams
    processors = logits_processors(settings)

    running = torch.full((inputs, beams, max_length), -1, dtype=torch.long, device=device)
    running[:, :, :prompt_width] = steps.history.view(inputs, beams, prompt_width)
    running_scores = torch.zeros((inputs, beams), device=device)
    running_scores[:, 1:] = UNREACHABLE  # the first step expands one beam: the others are copies of it
    hypotheses = running.clone()
    hypothesis_scores = torch.full((inputs, beams), UNREACHABLE, device=device)
    finished = torch.zeros((inputs, beams), dtype=torch.bool, device=device)
    improvable = torch.ones((inputs, 1), dtype=torch.bool, device=device)
    active = torch.arange(inputs, device=device)
    results: list[list[tuple[list[int], float]]] = [[] for _ in range(inputs)]

    for length in range(prompt_width, max_length):
        count = active.numel()
        logits = steps.logits(model)
        log_probs = torch.log_softmax(logits, dim=-1)
        if processors:
            log_probs = processors(running[:, :, :length].reshape(count * beams, length), log_probs)
        log_probs = forced_tokens(log_probs, length - prompt_width, settings.max_new_tokens, model.generation_config, model.config.is_encoder_decoder)
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(count, beams, vocab) + running_scores[:, :, None]).view(count, beams * vocab)
        top_scores, top_indices = torch.topk(totals, k=candidates)
        parents, tokens = top_indices // vocab, top_indices % vocab
        extended = torch.take_along_dim(running, parents[:, :, None], dim=1)
        extended[:, :, length] = tokens
        ends = torch.isin(tokens, stop_ids) | (length + 1 >= max_length)

        # The best `beams` candidates that go on; an ended one cannot.
        going_on = top_scores + ends.float() * UNREACHABLE
        chosen = torch.topk(going_on, k=beams).indices
        running = torch.take_along_dim(extended, chosen[:, :, None], dim=1)
        running_scores = torch.take_along_dim(going_on, chosen, dim=1)

        # Hypotheses: an ended candidate among the best `beams` enters if it beats the worst kept one.
        entering = ends & top_beams[None, :]
        scored = top_scores / ((length + 1 - prompt_width) ** settings.length_penalty)
        full = finished.all(dim=-1, keepdim=True) & settings.early_stopping
        # Added one by one, as transformers does: at 1e9 a float32 step is 64, so the sums decide ties.
        for excluded in (full, ~improvable, ~entering):
            scored = scored + excluded.float() * UNREACHABLE
        kept = torch.topk(torch.cat([hypothesis_scores, scored], dim=1), k=beams).indices
        hypotheses = torch.take_along_dim(torch.cat([hypotheses, extended], dim=1), kept[:, :, None], dim=1)
        hypothesis_scores = torch.take_along_dim(torch.cat([hypothesis_scores, scored], dim=1), kept, dim=1)
        finished = torch.take_along_dim(torch.cat([finished, entering], dim=1), kept, dim=1)

        # Can a running beam still beat the worst hypothesis? (transformers' heuristic: at the current length)
        best_running = running_scores[:, :1] / ((length + 1 - prompt_width) ** settings.length_penalty)
        worst_kept = torch.where(finished, hypothesis_scores.min(dim=1, keepdim=True).values, UNREACHABLE)
        improvable = improvable & (best_running > worst_kept).any(dim=-1, keepdim=True)
        done = ~improvable.squeeze(1) | (finished.all(dim=-1) & settings.early_stopping)
        if length + 1 >= max_length or bool(ends.all()):
            done = torch.ones_like(done)
        for row in done.nonzero().squeeze(1).tolist():
            results[int(active[row])] = _outputs(hypotheses[row], hypothesis_scores[row], prompt_width, stop, settings.num_return_sequences)
        if bool(done.all()):
            break
        # Next step's rows: each going-on beam's parent row, for the inputs still searching.
        staying = (~done).nonzero().squeeze(1)
        first_rows = torch.arange(count, device=device)[:, None] * beams
        parent_rows = torch.take_along_dim(parents, chosen, dim=1) + first_rows
        own_rows = (first_rows[staying] + torch.arange(beams, device=device)).reshape(-1) if bool(done.any()) else None
        steps.select(parent_rows[staying].reshape(-1), own_rows)
        active, running, running_scores = active[staying], running[staying], running_scores[staying]
        hypotheses, hypothesis_scores = hypotheses[staying], hypothesis_scores[staying]
        finished, improvable = finished[staying], improvable[staying]
        steps.advance(running[:, :, length].reshape(-1, 1))
    return results


def _outputs(
    hypotheses: torch.Tensor, scores: torch.Tensor, prompt_width: int, stop: set[int], count: int
) -> list[tuple[list[int], float]]:
    """The best `count` hypotheses of one input: new tokens up to the first stop token, and the score."""
    outputs = []
    for ids, score in zip(hypotheses[:count, prompt_width:].tolist(), scores[:count].tolist()):
        ids = [token for token in ids if token >= 0]
        end = next((position + 1 for position, token in enumerate(ids) if token in stop), len(ids))
        outputs.append((ids[:end], score))
    return outputs
