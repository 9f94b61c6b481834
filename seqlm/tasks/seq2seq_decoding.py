"""seqlm's own greedy and sampling decoder for the seq2seq task (`seqlm.tasks.seq2seq_generation.generate`).

Why not `model.generate`: it keeps every row of a batch computing until the longest one ends, so one output
that runs to `max_new_tokens` costs the whole batch that many steps, and its per-step bookkeeping is a large
share of a small model's step. Here a row leaves the batch the step it ends (its KV cache, encoder states and
mask rows dropped), so a batch costs about the sum of its outputs' lengths, not its size times the longest.

Contract of `decode`: the same tokens `model.generate` gives for greedy search and, for sampling, draws from
the same distribution (temperature, then top-k, then top-p, as transformers orders them; the draws differ:
fewer rows consume the random stream once rows leave). Beam search is `seqlm.tasks.seq2seq_beams`, on the
same steps (`model_steps`). `supports` says when these loops give what `generate` would: no beam sampling,
and no setting in the model's generation_config.json beyond those they apply (the ids,
`forced_bos_token_id` / `forced_eos_token_id`, and the settings seqlm passes); anything else, e.g.
`min_length`, `bad_words_ids`, `repetition_penalty`, goes to `model.generate`.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import (
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import BaseModelOutput

from seqlm.config.generation import GenerationConfig
from seqlm.runtime.concurrent_batches import in_callers_contexts, resolve_streams, run_batches
from seqlm.tasks import decoder_prefill, t5_decoder_steps
from seqlm.tasks.first_maximum import first_maximum

# generation_config.json keys this decoder honours or that do not change greedy/sampled tokens here (seqlm
# passes its own max_new_tokens, beams, sampling settings and no_repeat_ngram_size over the model's).
HONOURED_KEYS = frozenset({
    "_from_model_config", "transformers_version", "bos_token_id", "eos_token_id", "pad_token_id",
    "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id", "use_cache", "output_attentions",
    "output_hidden_states", "output_scores", "return_dict_in_generate", "max_length", "max_new_tokens",
    "num_beams", "do_sample", "temperature", "top_k", "top_p", "no_repeat_ngram_size", "length_penalty",
    "early_stopping", "num_return_sequences",
})  # fmt: skip


def supports(model: Any, settings: GenerationConfig) -> bool:
    """True when `decode` (greedy, sampling) or `seq2seq_beams.beam_search` (beams) gives what `model.generate`
    would (see the module docstring); beam sampling goes to `model.generate`."""
    beam_sampling = settings.num_beams > 1 and settings.do_sample
    return not beam_sampling and set(model.generation_config.to_diff_dict()) <= HONOURED_KEYS


def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationConfig, stop: set[int],
    slice_rows: int | None = None,
) -> list[list[int]]:
    """`settings.num_return_sequences` outputs per row (row-major), each its new tokens up to and including the
    first of `stop`, or `settings.max_new_tokens` of them. Decoder-only prompts come left-padded, longest first;
    with `slice_rows` they (an encoder's sources: right-padded, longest first) run that many at a time before
    decoding as one batch (`seqlm.tasks.decoder_prefill`)."""
    n = settings.num_return_sequences
    step_inputs = model_steps(model, input_ids, attention_mask, n, settings.max_new_tokens, slice_rows, settings.streams)
    rows = step_inputs.history.shape[0]
    history = step_inputs.history
    processors = logits_processors(settings)
    config = model.generation_config
    stop_ids = torch.tensor(sorted(stop), dtype=torch.long, device=input_ids.device)
    active = torch.arange(rows, device=input_ids.device)
    prompt_width = history.shape[1]
    outputs: list[list[int]] = [[] for _ in range(rows)]
    for step in range(settings.max_new_tokens):
        logits = step_inputs.logits(model)
        scores = processors(history, logits) if processors else logits
        scores = forced_tokens(scores, step, settings.max_new_tokens, config, model.config.is_encoder_decoder)
        if settings.do_sample:
            next_ids = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_ids = first_maximum(scores)
        history = torch.cat([history, next_ids[:, None]], dim=1)
        ended = (
            torch.isin(next_ids, stop_ids) if step + 1 < settings.max_new_tokens else torch.ones_like(next_ids, dtype=torch.bool)
        )
        if bool(ended.any()):
            for row in ended.nonzero().squeeze(1).tolist():
                outputs[int(active[row])] = history[row, prompt_width:].tolist()
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active, history = active[keep], history[keep]
            step_inputs.select(keep, keep)
        step_inputs.advance(history[:, -1:])
    return outputs


def model_steps(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int, new_tokens: int,
    slice_rows: int | None = None, streams: int | Literal["auto"] = 1,
) -> EncoderDecoderSteps | DecoderSteps | t5_decoder_steps.T5DecoderSteps:
    """What the model is fed step by step, for either kind of model, `copies` rows per input row (candidates,
    beams), each input's copies together, for up to `new_tokens` steps; `history`: what generation starts from,
    one row per copy. A T5 runs its decoder step written out (`seqlm.tasks.t5_decoder_steps`). Where
    `slice_rows` is given, an encoder runs that many sources at a time (`streams` slices at once), and a
    decoder-only model's prompts run that many at a time into a cache reserved for prompt and new tokens."""
    cache_key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # renamed in 5.x
    if model.config.is_encoder_decoder:
        encoded = EncoderDecoderSteps(model, input_ids, attention_mask, cache_key, copies, slice_rows, streams)
        if t5_decoder_steps.supported(model):
            return t5_decoder_steps.T5DecoderSteps(model, encoded, capacity=new_tokens)
        return encoded
    # Only the last position's logits (what `generate` asks for too): a prompt's logits over the whole vocabulary
    # would cost a full output layer per prompt token, and rows × prompt × vocabulary floats of memory.
    last_only = "logits_to_keep" in inspect.signature(model.forward).parameters
    steps = DecoderSteps(input_ids.repeat_interleave(copies, 0), attention_mask.repeat_interleave(copies, 0), cache_key, last_only)
    if slice_rows is not None and decoder_prefill.cache_supported(model):
        steps.slice_rows, steps.capacity = slice_rows, input_ids.shape[1] + new_tokens
    return steps


class EncoderDecoderSteps:
    """The encoder runs once per input (its states then copied for each of its rows, as `generate` does); each
    step feeds the decoder its last token against the cached states. `source_states`: the states of each run of
    rows the encoder took together (rows × its longest source × hidden), as encoded (before any `select`)."""

    def __init__(
        self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache_key: str, copies: int,
        slice_rows: int | None = None, streams: int | Literal["auto"] = 1,
    ) -> None:
        self.cache_key = cache_key
        parts = _encode(model.get_encoder(), input_ids, attention_mask, slice_rows, streams)
        self.source_states = [states.repeat_interleave(copies, 0) for states in parts]
        self.attention_mask = attention_mask.repeat_interleave(copies, 0)
        self._encoder_states: torch.Tensor | None = None
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = model.generation_config.decoder_start_token_id
        if start is None:
            start = (
                model.config.decoder_start_token_id
                if model.config.decoder_start_token_id is not None
                else model.config.decoder.bos_token_id
            )
        self.history = torch.full((input_ids.shape[0] * copies, 1), int(start), dtype=torch.long, device=input_ids.device)
        self.decoder_input_ids = self.history

    @property
    def encoder_states(self) -> torch.Tensor:
        """rows × source width × hidden: the slices' states, padded with zeros (masked) to the widest (made when
        first asked for: `T5DecoderSteps` reads the slices)."""
        if self._encoder_states is None:
            width = self.attention_mask.shape[1]
            padded = [F.pad(states, (0, 0, 0, width - states.shape[1])) for states in self.source_states]
            self._encoder_states = padded[0] if len(padded) == 1 else torch.cat(padded)
        return self._encoder_states

    def logits(self, model: Any) -> torch.Tensor:
        """This step's next-token logits (float32), one row per row."""
        return model(**self.forward_arguments()).logits[:, -1, :].to(dtype=torch.float32)

    def forward_arguments(self) -> dict[str, Any]:
        return {
            "encoder_outputs": BaseModelOutput(last_hidden_state=self.encoder_states), "attention_mask": self.attention_mask,
            "decoder_input_ids": self.decoder_input_ids, self.cache_key: self.cache, "use_cache": True,
        }  # fmt: skip

    def select(self, rows: torch.Tensor, source_rows: torch.Tensor | None) -> None:
        """The decoder states of `rows`, in this order (rows repeat when beam search reorders its beams), and the
        source side (encoder states, mask, cross-attention cache) of `source_rows`, None: unchanged. Beams of one
        input share one source: reordering them leaves it as it is, which saves copying the largest cache."""
        self.cache.self_attention_cache.batch_select_indices(rows)
        if source_rows is not None:
            self.cache.cross_attention_cache.batch_select_indices(source_rows)
            self._encoder_states, self.attention_mask = self.encoder_states[source_rows], self.attention_mask[source_rows]

    def advance(self, last_ids: torch.Tensor) -> None:
        self.decoder_input_ids = last_ids


def _encode(
    encoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, slice_rows: int | None, streams: int | Literal["auto"]
) -> list[torch.Tensor]:
    """The encoder's states of right-padded sources (longest first), one tensor per slice of rows that ran together,
    each cut to its own longest source: all rows at once without `slice_rows`; else slices of at most that many
    rows, a new one where a source is much shorter than its slice's longest (`decoder_prefill.prompt_slices`:
    the encoder is bound by arithmetic, so padding costs as much as real tokens), `streams` of them at once on a
    CPU (`generation.streams`: one core each computes a slice's large matmuls faster than two share them)."""
    if slice_rows is None or slice_rows >= input_ids.shape[0]:
        return [encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state]
    slices = decoder_prefill.prompt_slices(attention_mask, slice_rows)

    def encoded(rows: tuple[int, int]) -> torch.Tensor:
        mask = attention_mask[rows[0] : rows[1]]
        width = int(mask.sum(dim=1).max())
        return encoder(input_ids=input_ids[rows[0] : rows[1], :width], attention_mask=mask[:, :width], return_dict=True).last_hidden_state

    parts = dict(run_batches(in_callers_contexts(encoded), slices, resolve_streams(streams, input_ids.device, len(slices))))
    return [parts[rows] for rows in slices]


class DecoderSteps:
    """The prompt runs once (positions counted from its first real token, as `generate` does under left
    padding); each step feeds the last token, its position and the grown mask."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache_key: str, last_only: bool = False) -> None:
        self.cache_key = cache_key
        self.extra = {"logits_to_keep": 1} if last_only else {}
        self.history = input_ids
        self.attention_mask = attention_mask
        self.positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        self.step_ids = input_ids
        self.cache: Any = DynamicCache()
        self.slice_rows: int | None = None  # set: the prompt runs in slices (`seqlm.tasks.decoder_prefill`)
        self.capacity = 0

    def logits(self, model: Any) -> torch.Tensor:
        """This step's next-token logits (float32), one row per row; the first step runs the prompts."""
        if self.slice_rows is not None:
            slice_rows, self.slice_rows = self.slice_rows, None
            args = (self.step_ids, self.attention_mask, self.positions, self.capacity, slice_rows, self.cache_key, self.extra)
            logits, cache = decoder_prefill.prefill(model, *args)
            if cache is not None:
                self.cache = cache
                return logits
        return model(**self.forward_arguments()).logits[:, -1, :].to(dtype=torch.float32)

    def forward_arguments(self) -> dict[str, Any]:
        return {
            "input_ids": self.step_ids, "attention_mask": self.attention_mask, "position_ids": self.positions,
            self.cache_key: self.cache, "use_cache": True, **self.extra,
        }  # fmt: skip

    def select(self, rows: torch.Tensor, source_rows: torch.Tensor | None) -> None:
        """The states of `rows`, in this order (see `EncoderDecoderSteps.select`); the mask and positions, the
        same for every beam of an input, of `source_rows` (None: unchanged)."""
        self.cache.batch_select_indices(rows)
        if source_rows is not None:
            self.attention_mask, self.positions = self.attention_mask[source_rows], self.positions[source_rows]

    def advance(self, last_ids: torch.Tensor) -> None:
        self.step_ids = last_ids
        self.positions = self.positions[:, -1:] + 1
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones((last_ids.shape[0], 1))], dim=1)


def logits_processors(settings: GenerationConfig) -> LogitsProcessorList:
    """What `model.generate` applies for these settings, in its order."""
    processors = LogitsProcessorList()
    if settings.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.do_sample:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p is not None and settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


def forced_tokens(scores: torch.Tensor, step: int, max_new_tokens: int, config: Any, encoder_decoder: bool) -> torch.Tensor:
    """The model's forced first / last token (mBART's language id, BART's closing eos), as `generate` forces them
    (the first only after a decoder start token: a prompt is never that short)."""
    forced = config.forced_bos_token_id if step == 0 and encoder_decoder else None
    if step == max_new_tokens - 1 and config.forced_eos_token_id is not None:
        forced = config.forced_eos_token_id
    if forced is None:
        return scores
    ids = forced if isinstance(forced, list) else [forced]
    masked = torch.full_like(scores, -float("inf"))
    masked[:, ids] = 0
    return masked
