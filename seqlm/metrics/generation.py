"""Generation metrics for seq2seq tasks (translation, summarization), offline and equal to their reference packages.

Contract of `generation_scores(predictions, references, token_ids=None, pad_token_id=None, bleu_tokenize="13a")`:

* `predictions`: one generated string per example. `references`: per example either one string or a non-empty
  sequence of strings (several references). Lengths must match; anything else is a ValueError (a TypeError for
  a value that is not a string), raised before any scoring.
* `bleu`, `chrf`: sacrebleu's corpus BLEU (`BLEU(tokenize=bleu_tokenize)`, defaults otherwise: mixed case,
  exponential smoothing) and corpus chrF (`CHRF()`: chrF2, character 6-grams), on sacrebleu's 0–100 scale.
  `bleu_signature` / `chrf_signature` are sacrebleu's signature strings (`nrefs:1|case:mixed|eff:no|tok:13a|
  smooth:exp|version:2.6.0`), to report next to the scores. BLEU's details come too: `bleu_precisions` (the four
  n-gram precisions, 0–100), `bleu_brevity_penalty`, `bleu_sys_len` and `bleu_ref_len` (13a tokens).
* Several references: sacrebleu wants them as reference *streams* (stream k holds every example's k-th
  reference), all of the corpus's length. An example with fewer references than the most any example has gets
  `None` in the streams it has no reference in: sacrebleu's own way to give segments a variable number of
  references (it skips `None`; its signature then says `nrefs:var`). No reference is invented or repeated, so
  the scores equal sacrebleu's on the same data.
* `rouge1`, `rouge2`, `rougeL`, `rougeLsum`: rouge-score's F-measure (`RougeScorer(types, use_stemmer=True)`:
  Porter stemming, its default tokenizer, which lower-cases and keeps only a–z and 0–9 — so it suits English
  output, not text in other scripts), ×100 to share BLEU's 0–100 scale. Several references: `score_multi`, the
  best reference per ROUGE type. The corpus figure is the plain mean over examples (not the bootstrap median
  that `evaluate.load("rouge")` reports by default, which differs from the mean in the second decimal).
* ROUGE-Lsum splits summaries into sentences at newlines ("\\n"), rouge-score's own rule (`split_summaries=False`):
  each line is a sentence and a one-line summary is one sentence, so its Lsum equals its L. Hugging Face's
  run_summarization instead puts a newline after each nltk `sent_tokenize` sentence first; nltk's sentence
  model (punkt) is a separate download, which seqlm does not need: a caller who wants sentence-level Lsum joins
  its sentences with "\\n" before scoring.
* `gen_len`: the mean generated length, and `gen_len_unit` says in what. Given `token_ids` (the generated ids
  per example), tokens: the ids that are not `pad_token_id` (Hugging Face's `np.count_nonzero(ids != pad)`;
  every id when `pad_token_id` is None). Without them, words: `len(prediction.split())`.
* `examples`: the number of examples.
* An empty prediction is scored, as sacrebleu and rouge-score score it (0 for its ROUGE, no matches for BLEU,
  a brevity penalty of 0 when every prediction is empty). An empty corpus (no examples) gives nan for every
  score, `examples` 0 and None for the signatures (sacrebleu has no signature before it has seen references).

sacrebleu and rouge-score are imported on first use: importing rouge-score imports nltk, about 2 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SCORE_KEYS = ("bleu", "chrf", *ROUGE_TYPES, "gen_len")


def generation_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    token_ids: Sequence[Sequence[int]] | None = None,
    pad_token_id: int | None = None,
    bleu_tokenize: str = "13a",
) -> dict[str, Any]:
    """BLEU, chrF, ROUGE-1/2/L/Lsum, mean generated length and sacrebleu's signatures (see the module docstring)."""
    predictions = list(predictions)
    reference_sets = reference_lists(references)
    _check(predictions, reference_sets, token_ids, bleu_tokenize)
    if not predictions:
        return {key: math.nan for key in SCORE_KEYS} | {
            "gen_len_unit": "tokens" if token_ids is not None else "words",
            "examples": 0,
            "bleu_signature": None,
            "chrf_signature": None,
        }
    return {
        **corpus_bleu_chrf(predictions, reference_sets, bleu_tokenize),
        **mean_rouge(predictions, reference_sets),
        **mean_generated_length(predictions, token_ids, pad_token_id),
        "examples": len(predictions),
    }


def reference_lists(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Each example's references as a list: a lone string is a list of one."""
    lists = []
    for i, refs in enumerate(references):
        if not isinstance(refs, (str, Sequence)):
            raise TypeError(f"references of example {i} are a {type(refs).__name__}, not a string or a list of strings")
        lists.append([refs] if isinstance(refs, str) else list(refs))
    return lists


def reference_streams(reference_sets: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: stream k holds each example's k-th reference, None where an example has fewer."""
    width = max(map(len, reference_sets), default=0)
    return [[refs[k] if k < len(refs) else None for refs in reference_sets] for k in range(width)]


def corpus_bleu_chrf(predictions: list[str], reference_sets: list[list[str]], bleu_tokenize: str = "13a") -> dict[str, Any]:
    """sacrebleu's corpus BLEU and chrF (0–100) with their signatures and BLEU's details; at least one example."""
    from sacrebleu.metrics import BLEU, CHRF

    streams = reference_streams(reference_sets)
    bleu, chrf = BLEU(tokenize=bleu_tokenize), CHRF()
    bleu_score = bleu.corpus_score(predictions, streams)
    chrf_score = chrf.corpus_score(predictions, streams)
    return {
        "bleu": float(bleu_score.score),
        "chrf": float(chrf_score.score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_precisions": [float(p) for p in bleu_score.precisions],
        "bleu_brevity_penalty": float(bleu_score.bp),
        "bleu_sys_len": int(bleu_score.sys_len),
        "bleu_ref_len": int(bleu_score.ref_len),
    }


def mean_rouge(predictions: list[str], reference_sets: list[list[str]]) -> dict[str, float]:
    """Mean over examples of rouge-score's F-measure ×100 (stemmed; best reference per type); at least one example."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, reference_sets):
        scores = scorer.score_multi(refs, prediction)  # the max over references, per ROUGE type
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(predictions) for name, total in totals.items()}


def mean_generated_length(
    predictions: list[str], token_ids: Sequence[Sequence[int]] | None = None, pad_token_id: int | None = None
) -> dict[str, Any]:
    """`gen_len`: mean non-pad token ids per example when `token_ids` are given, else mean whitespace words."""
    if token_ids is not None:
        lengths = [sum(1 for token in ids if pad_token_id is None or token != pad_token_id) for ids in token_ids]
        unit = "tokens"
    else:
        lengths = [len(prediction.split()) for prediction in predictions]
        unit = "words"
    return {"gen_len": sum(lengths) / len(lengths) if lengths else math.nan, "gen_len_unit": unit}


def _check(
    predictions: list[str], reference_sets: list[list[str]], token_ids: Sequence[Sequence[int]] | None, bleu_tokenize: str
) -> None:
    from sacrebleu.metrics import BLEU

    if bleu_tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"unknown BLEU tokenizer {bleu_tokenize!r}; use one of {', '.join(BLEU.TOKENIZERS)}")
    if len(predictions) != len(reference_sets):
        raise ValueError(f"{len(predictions)} predictions but {len(reference_sets)} reference sets; give one per prediction")
    if token_ids is not None and len(token_ids) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(token_ids)} token id sequences; give one per prediction")
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise TypeError(f"prediction {i} is a {type(prediction).__name__}, not a string")
    for i, refs in enumerate(reference_sets):
        if not refs:
            raise ValueError(f"example {i} has no reference; give at least one")
        for k, reference in enumerate(refs):
            if not isinstance(reference, str):
                raise TypeError(f"reference {k} of example {i} is a {type(reference).__name__}, not a string")
