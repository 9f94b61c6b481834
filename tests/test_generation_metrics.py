"""Generation metrics equal their references: sacrebleu's `corpus_bleu` / `corpus_chrf` and rouge-score's
`RougeScorer(..., use_stemmer=True)`, computed here directly, for one and several references per example, on fixed
and on random (hypothesis) corpora; plus the documented edge cases and the `evaluate` module wrapper."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score.rouge_scorer import RougeScorer

from seqlm.io.seq2seq_records import read_seq2seq
from seqlm.metrics import load_metric
from seqlm.metrics.generation import ROUGE_TYPES, corpus_bleu_chrf, generation_scores, reference_streams

SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

PREDICTIONS = [
    "The cat sat on the mat.",
    "He was running to the stations, quickly.",
    "A summary line.\nAnd a second sentence here.",
    "",
]
REFERENCES = [
    "The cat sat on a mat.",
    "He runs to the station quickly!",
    "A summary in one line and a second sentence.",
    "Nothing was generated for this one.",
]
MULTI_REFERENCES = [
    ["The cat sat on a mat.", "A cat was sitting on the mat."],
    ["He runs to the station quickly!", "Quickly, he ran to the stations."],
    ["A summary in one line and a second sentence.", "One line.\nA second sentence."],
    ["Nothing was generated for this one.", "Empty output."],
]
UNEQUAL_REFERENCES = [
    ["The cat sat on a mat."],
    ["He runs to the station quickly!", "Quickly, he ran to the stations.", "He ran."],
    ["A summary in one line and a second sentence.", "One line.\nA second sentence."],
    ["Nothing was generated for this one."],
]


def expected_scores(predictions: list[str], reference_sets: list[list[str]]) -> dict[str, float]:
    """The reference implementations, called directly; several references as None-padded sacrebleu streams."""
    width = max(len(refs) for refs in reference_sets)
    streams = [[refs[k] if k < len(refs) else None for refs in reference_sets] for k in range(width)]
    bleu = sacrebleu.corpus_bleu(predictions, streams)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_example = [scorer.score_multi(refs, prediction) for prediction, refs in zip(predictions, reference_sets)]
    rouge = {name: 100 * sum(scores[name].fmeasure for scores in per_example) / len(per_example) for name in ROUGE_TYPES}
    return {"bleu": bleu.score, "chrf": sacrebleu.corpus_chrf(predictions, streams).score, "bleu_bp": bleu.bp, **rouge}


def assert_equal_to_references(scores: dict, predictions: list[str], reference_sets: list[list[str]]) -> None:
    expected = expected_scores(predictions, reference_sets)
    assert scores["bleu"] == pytest.approx(expected["bleu"], rel=1e-12, abs=1e-12)
    assert scores["chrf"] == pytest.approx(expected["chrf"], rel=1e-12, abs=1e-12)
    assert scores["bleu_brevity_penalty"] == pytest.approx(expected["bleu_bp"], rel=1e-12, abs=1e-12)
    for name in ROUGE_TYPES:
        assert scores[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    assert scores["examples"] == len(predictions)


# --------------------------------------------------------------------------- equal to the references


def test_single_reference_equals_sacrebleu_and_rouge_score() -> None:
    scores = generation_scores(PREDICTIONS, REFERENCES)
    assert_equal_to_references(scores, PREDICTIONS, [[ref] for ref in REFERENCES])
    assert scores["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|")
    direct = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES])
    assert scores["bleu_precisions"] == pytest.approx(direct.precisions)
    assert (scores["bleu_sys_len"], scores["bleu_ref_len"]) == (direct.sys_len, direct.ref_len)
    assert 0 < scores["bleu"] < 100 and 0 < scores["rouge1"] < 100


def test_a_lone_string_and_a_list_of_one_are_the_same_reference() -> None:
    assert generation_scores(PREDICTIONS, REFERENCES) == generation_scores(PREDICTIONS, [[ref] for ref in REFERENCES])


def test_several_references_equal_the_references() -> None:
    scores = generation_scores(PREDICTIONS, MULTI_REFERENCES)
    assert_equal_to_references(scores, PREDICTIONS, MULTI_REFERENCES)
    assert scores["bleu_signature"].startswith("nrefs:2|")
    # More references can only help ROUGE (max over references) and BLEU's clipped counts here.
    single = generation_scores(PREDICTIONS, REFERENCES)
    assert all(scores[name] >= single[name] for name in ROUGE_TYPES) and scores["bleu"] >= single["bleu"]


def test_unequal_reference_counts_are_padded_with_none_as_sacrebleu_allows() -> None:
    assert reference_streams([["a"], ["b", "c", "d"]]) == [["a", "b"], [None, "c"], [None, "d"]]
    scores = generation_scores(PREDICTIONS, UNEQUAL_REFERENCES)
    assert_equal_to_references(scores, PREDICTIONS, UNEQUAL_REFERENCES)
    assert scores["bleu_signature"].startswith("nrefs:var|") and scores["chrf_signature"].startswith("nrefs:var|")


def test_rouge_stems_and_lsum_splits_sentences_at_newlines() -> None:
    stemmed = generation_scores(["the cats were running"], ["the cat was run"])
    assert stemmed["rouge1"] == pytest.approx(100 * 3 / 4)  # cats/cat and running/run match after Porter stemming
    one_line = "the cat sat. the dog ran."
    two_lines = "the dog ran.\nthe cat sat."
    scores = generation_scores([two_lines], [one_line])
    assert scores["rougeL"] == pytest.approx(
        RougeScorer(["rougeL"], use_stemmer=True).score(one_line, two_lines)["rougeL"].fmeasure * 100
    )
    assert scores["rougeLsum"] > scores["rougeL"]  # the two lines are two sentences, matched separately
    single = generation_scores([two_lines.replace("\n", " ")], [one_line])
    assert single["rougeLsum"] == single["rougeL"]  # without newlines the summary is one sentence


def test_bleu_tokenizer_is_passed_to_sacrebleu() -> None:
    predictions, references = ["猫が座った。"], ["猫が座っていた。"]
    scores = generation_scores(predictions, references, bleu_tokenize="char")
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references], tokenize="char").score)
    assert "tok:char" in scores["bleu_signature"]
    with pytest.raises(ValueError, match=r"unknown BLEU tokenizer 'nope'; use one of .*13a"):
        generation_scores(predictions, references, bleu_tokenize="nope")


# --------------------------------------------------------------------------- generated length


def test_gen_len_counts_whitespace_words_without_ids_and_non_pad_tokens_with_them() -> None:
    scores = generation_scores(["one two three", "", "four  five\nsix seven"], ["x", "y", "z"])
    assert (scores["gen_len"], scores["gen_len_unit"]) == (pytest.approx(7 / 3), "words")
    ids = [[5, 6, 2, 0, 0], [2, 0, 0, 0, 0], [7, 8, 9, 10, 2]]
    scores = generation_scores(["a", "b", "c"], ["x", "y", "z"], token_ids=ids, pad_token_id=0)
    assert (scores["gen_len"], scores["gen_len_unit"]) == (pytest.approx(9 / 3), "tokens")
    assert generation_scores(["a", "b", "c"], ["x", "y", "z"], token_ids=ids)["gen_len"] == 5.0  # no pad id: every id


# --------------------------------------------------------------------------- edge cases and errors


def test_empty_predictions_score_zero_as_the_references_do() -> None:
    scores = generation_scores(["", ""], ["a reference", "another one"])
    assert_equal_to_references(scores, ["", ""], [["a reference"], ["another one"]])
    assert scores["bleu"] == scores["chrf"] == scores["bleu_brevity_penalty"] == 0.0
    assert all(scores[name] == 0.0 for name in ROUGE_TYPES) and scores["gen_len"] == 0.0


def test_an_empty_corpus_gives_nan_scores_and_no_signature() -> None:
    scores = generation_scores([], [])
    assert all(math.isnan(scores[key]) for key in ("bleu", "chrf", *ROUGE_TYPES, "gen_len"))
    assert (scores["examples"], scores["bleu_signature"], scores["chrf_signature"]) == (0, None, None)


@pytest.mark.parametrize(
    ("predictions", "references", "error", "message"),
    [
        (["a", "b"], ["a"], ValueError, "2 predictions but 1 reference sets; give one per prediction"),
        (["a"], [[]], ValueError, "example 0 has no reference; give at least one"),
        (["a", 5], ["a", "b"], TypeError, "prediction 1 is a int, not a string"),
        (["a"], [["x", None]], TypeError, "reference 1 of example 0 is a NoneType, not a string"),
        (["a"], [None], TypeError, "references of example 0 are a NoneType, not a string or a list of strings"),
    ],
)
def test_malformed_inputs_are_refused_before_scoring(predictions, references, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        generation_scores(predictions, references)


def test_token_ids_must_match_the_predictions() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 token id sequences"):
        generation_scores(["a", "b"], ["a", "b"], token_ids=[[1]])


# --------------------------------------------------------------------------- the evaluate module


def test_evaluate_module_over_batches_equals_the_function() -> None:
    metric = load_metric("generation")
    metric.add_batch(predictions=PREDICTIONS[:2], references=UNEQUAL_REFERENCES[:2])
    metric.add_batch(predictions=PREDICTIONS[2:], references=UNEQUAL_REFERENCES[2:])
    assert metric.compute() == generation_scores(PREDICTIONS, UNEQUAL_REFERENCES)
    single = load_metric("generation")
    single.add_batch(predictions=PREDICTIONS, references=REFERENCES)
    ids = [[1, 2, 0], [3, 0, 0], [4, 5, 6], [0, 0, 0]]
    assert single.compute(token_ids=ids, pad_token_id=0) == generation_scores(
        PREDICTIONS, REFERENCES, token_ids=ids, pad_token_id=0
    )
    assert load_metric("generation").compute()["examples"] == 0


# --------------------------------------------------------------------------- random corpora

WORDS = ["the", "cat", "cats", "sat", "sitting", "on", "a", "mat", "dog", "ran", "running", ".", ",", "!", "Über", "déjà", "42"]
sentences = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
multiline = st.lists(sentences, min_size=1, max_size=3).map("\n".join)
corpora = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(
        st.lists(st.one_of(sentences, multiline), min_size=n, max_size=n),
        st.lists(st.lists(st.one_of(sentences, multiline), min_size=1, max_size=3), min_size=n, max_size=n),
    )
)


@SETTINGS
@given(corpora)
def test_random_corpora_equal_the_references(corpus: tuple[list[str], list[list[str]]]) -> None:
    predictions, reference_sets = corpus
    scores = generation_scores(predictions, reference_sets)
    assert_equal_to_references(scores, predictions, reference_sets)
    assert all(0.0 <= scores[key] <= 100.0 + 1e-9 for key in ("bleu", "chrf", *ROUGE_TYPES))  # sacrebleu: 100.00000000000004
    assert scores["gen_len"] == pytest.approx(sum(len(p.split()) for p in predictions) / len(predictions))


@SETTINGS
@given(corpora)
def test_random_single_reference_corpora_equal_the_references(corpus: tuple[list[str], list[list[str]]]) -> None:
    predictions, reference_sets = corpus
    references = [refs[0] for refs in reference_sets]
    scores = generation_scores(predictions, references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score, abs=1e-12)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score, abs=1e-12)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    for name in ROUGE_TYPES:
        expected = sum(scorer.score(ref, pred)[name].fmeasure for ref, pred in zip(references, predictions)) / len(predictions)
        assert scores[name] == pytest.approx(100 * expected, abs=1e-12), name


# --------------------------------------------------------------------------- the shipped data's README baselines


@pytest.mark.parametrize(("folder", "bleu", "chrf"), [("es-en", 0.07, 17.92), ("kjv-web", 46.91, 68.65)])
def test_copy_source_baselines_of_the_translation_readme(folder: str, bleu: float, chrf: float) -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "tasks" / "translation" / folder / "validation.jsonl"
    examples = read_seq2seq(str(path))
    scores = corpus_bleu_chrf([e.source for e in examples], [list(e.references) for e in examples])
    assert (round(scores["bleu"], 2), round(scores["chrf"], 2)) == (bleu, chrf)
    assert f"{bleu:.2f} | {chrf:.2f}" in (path.parents[1] / "README.md").read_text(encoding="utf-8")
