"""Token-classification metrics equal their references: seqeval (entities, default and strict mode), scikit-learn (POS
tables, confusion matrix) and the transformers token-classification pipeline (entity spans, aggregation "first").

seqeval is a test-only reference (dev extra). The entity-span test builds a tiny random BERT tagger and WordPiece
tokenizer offline.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import seqeval.scheme as seqeval_scheme
import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from seqlm.metrics import load_metric
from seqlm.metrics.entity_spans import entity_spans
from seqlm.metrics.sequence_labelling import detect_scheme, entities, sequence_labelling_scores

NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
UPOS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
PREFIXES = {"IOB1": "IOB", "IOE1": "IOE", "IOB2": "IOB", "IOE2": "IOE", "IOBES": "IOBES", "BILOU": "BILOU"}
# Tags seqeval's default mode reads without complaint but that are not well formed: it must be read the same way.
ODD_TAGS = ["O", "B-X", "I-X", "I-Y", "E-Y", "S-X", "B", "I", "E", ".", "X", "X-Z", "B-X-Y", "I--X", "PER", "O-X"]

CASES = {  # name: (references, predictions)
    "I- without B-": ([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]),
    "adjacent same type": ([["B-PER", "B-PER", "O"]], [["B-PER", "I-PER", "O"]]),
    "type change inside": ([["B-PER", "I-LOC", "O"]], [["B-PER", "I-PER", "O"]]),
    "I- of another type after I-": ([["B-ORG", "I-ORG", "I-LOC", "I-LOC"]], [["B-ORG", "I-ORG", "B-LOC", "I-LOC"]]),
    "at the start and end": ([["B-LOC", "O", "O", "B-ORG"]], [["B-LOC", "O", "B-ORG", "I-ORG"]]),
    "all O": ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    "no predicted entity": ([["B-PER", "I-PER", "O"], ["B-LOC"]], [["O", "O", "O"], ["O"]]),
    "only predicted entities": ([["O", "O"], ["O"]], [["B-PER", "O"], ["I-LOC"]]),
    "window split": ([["O", "B-PER", "I-PER"], ["I-PER", "O"]], [["O", "B-PER", "I-PER"], ["B-PER", "O"]]),
    "empty sequences": ([[], ["B-PER"], []], [[], ["B-PER"], []]),
}


def seqeval_scores(references: list, predictions: list, scheme: str = "IOB2", mode: str = "default") -> dict:
    """Our result's layout, filled from seqeval."""
    kwargs = {"mode": "strict", "scheme": getattr(seqeval_scheme, scheme)} if mode == "strict" else {}
    with warnings.catch_warnings():  # seqeval warns on undefined ratios and odd tags
        warnings.simplefilter("ignore")
        report = classification_report(references, predictions, output_dict=True, **kwargs)
        micro = [score(references, predictions, **kwargs) for score in (precision_score, recall_score, f1_score)]
        accuracy = accuracy_score(references, predictions) if any(references) else math.nan
    rows = {k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": v["support"]} for k, v in report.items()}
    average_rows = {avg: rows.pop(f"{avg} avg") for avg in ("micro", "macro", "weighted")}
    averages = {f"{avg}_{key}": row[key] for avg, row in average_rows.items() for key in ("precision", "recall", "f1")}
    assert micro == [averages.pop(f"micro_{key}") for key in ("precision", "recall", "f1")]  # two seqeval routes agree
    return {"accuracy": accuracy, "precision": micro[0], "recall": micro[1], "f1": micro[2], **averages, "per_type": rows}


def assert_same(ours: dict, expected: dict) -> None:
    """Equal (not approximately: the same formulas in the same order), nan equal to nan."""
    for key, value in expected.items():
        if isinstance(value, dict):
            assert ours[key].keys() == value.keys(), key
            for name in value:
                assert_same(ours[key][name], value[name])
        else:
            assert ours[key] == value or (math.isnan(ours[key]) and math.isnan(value)), (key, ours[key], value)


def random_corpus(rng: np.random.Generator, tags: list[str], change: float = 0.3) -> tuple[list, list]:
    """1-4 sequences of 0-10 tags (O twice as likely as each other tag); predictions change ~`change` of them."""
    weights = np.array([2.0 if tag == "O" else 1.0 for tag in tags])
    references, predictions = [], []
    for _ in range(rng.integers(1, 5)):
        ref = rng.choice(tags, size=rng.integers(0, 11), p=weights / weights.sum())
        pred = np.where(rng.random(ref.size) < change, rng.choice(tags, size=ref.size), ref)
        references.append(ref.tolist())
        predictions.append(pred.tolist())
    return references, predictions


def scheme_tags(scheme: str) -> list[str]:
    return ["O"] + [f"{prefix}-{kind}" for prefix in PREFIXES[scheme] if prefix != "O" for kind in ("PER", "LOC")]


@pytest.mark.parametrize("mode", ["default", "strict"])
@pytest.mark.parametrize("name", CASES)
def test_tricky_cases_equal_seqeval(name: str, mode: str) -> None:
    references, predictions = CASES[name]
    assert_same(sequence_labelling_scores(references, predictions, scheme="IOB2", mode=mode), seqeval_scores(references, predictions, mode=mode))


def test_tricky_cases_by_hand() -> None:
    """What the cases mean: default mode (conlleval) opens an entity at a bare I-, strict IOB2 drops it."""
    references, predictions = CASES["I- without B-"]
    assert sequence_labelling_scores(references, predictions, "IOB2")["f1"] == 1.0
    assert sequence_labelling_scores(references, predictions, "IOB2", "strict")["f1"] == 0.0
    assert entities(["B-PER", "B-PER", "I-LOC", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 2), ("LOC", 2, 3), ("PER", 3, 4)]
    # A window boundary cuts an entity: the continuation is an entity of its own (default) or nothing (strict).
    assert [entities(tags) for tags in CASES["window split"][0]] == [[("PER", 1, 3)], [("PER", 0, 1)]]
    assert [entities(tags, mode="strict") for tags in CASES["window split"][0]] == [[("PER", 1, 3)], []]
    scores = sequence_labelling_scores(*CASES["all O"])
    assert (scores["scheme"], scores["accuracy"], scores["f1"], scores["weighted_f1"], scores["per_type"]) == ("IOB2", 1.0, 0.0, 0.0, {})
    assert math.isnan(scores["macro_f1"])  # seqeval: the mean over no entity type


@pytest.mark.parametrize("mode", ["default", "strict"])
def test_random_corpora_equal_seqeval(mode: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        references, predictions = random_corpus(rng, NER)
        ours = sequence_labelling_scores(references, predictions, mode=mode)  # scheme "auto": IOB2 (None without any tag)
        assert ours["scheme"] == ("IOB2" if any(references) else None)
        assert_same(ours if any(references) else sequence_labelling_scores(references, predictions, "IOB2", mode), seqeval_scores(references, predictions, mode=mode))


@pytest.mark.parametrize("scheme", list(PREFIXES))
def test_entities_equal_seqeval_in_every_scheme(scheme: str) -> None:
    rng = np.random.default_rng(1)
    tags = scheme_tags(scheme)
    for _ in range(300):
        sequence = rng.choice(tags, size=rng.integers(0, 12)).tolist()
        strict = seqeval_scheme.Tokens(sequence, getattr(seqeval_scheme, scheme)).entities
        assert entities(sequence, scheme, "strict") == [(e.tag, e.start, e.end) for e in strict]
        # seqeval's default mode knows B/I/E/S only; ours reads BILOU's L-/U- as E-/S-.
        as_seqeval = [{"L": "E", "U": "S"}.get(tag[0], tag[0]) + tag[1:] for tag in sequence] if scheme == "BILOU" else sequence
        assert entities(sequence, scheme) == [(kind, start, end + 1) for kind, start, end in get_entities(as_seqeval)]
    references, predictions = random_corpus(rng, tags)
    assert_same(sequence_labelling_scores(references, predictions, scheme, "strict"), seqeval_scores(references, predictions, scheme, "strict"))


def test_default_mode_reads_odd_tags_as_seqeval_does() -> None:
    rng = np.random.default_rng(2)
    for _ in range(150):
        references, predictions = random_corpus(rng, ODD_TAGS, change=0.5)
        for sequence in references:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = get_entities(sequence)
            assert entities(sequence) == [(kind, start, end + 1) for kind, start, end in expected]
        assert_same(sequence_labelling_scores(references, predictions, scheme="IOB2"), seqeval_scores(references, predictions))


def test_strict_mode_rejects_a_prefix_outside_the_scheme() -> None:
    for scheme, tag in (("IOB2", "E-PER"), ("IOE2", "B-PER"), ("IOBES", "U-PER"), ("BILOU", "S-PER")):
        with pytest.raises(ValueError):
            list(seqeval_scheme.Tokens([tag], getattr(seqeval_scheme, scheme)).entities)
        with pytest.raises(ValueError, match="does not allow"):
            entities(["O", tag], scheme, "strict")
    with pytest.raises(ValueError, match="scheme"):
        entities(["O"], "IOB3")
    with pytest.raises(ValueError, match="mode"):
        sequence_labelling_scores([["O"]], [["O"]], "IOB2", mode="lenient")
    with pytest.raises(ValueError, match="differ"):
        sequence_labelling_scores([["O", "O"]], [["O"]])


def test_detect_scheme() -> None:
    assert detect_scheme(NER) == "IOB2"  # IOB1 has the same tag set: the caller names it
    assert detect_scheme(["O", "B-PER", "I-PER", "E-PER", "S-PER"]) == "IOBES"
    assert detect_scheme(["O", "B-PER", "S-PER"]) == "IOBES"
    assert detect_scheme(["O", "I-PER", "E-PER"]) == "IOE2"
    assert detect_scheme(["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]) == "BILOU"
    assert detect_scheme(["B-MISC-X"]) == "IOB2"
    assert detect_scheme(["O"]) == "IOB2"
    for not_prefixed in (UPOS, [], ["O", "B-PER", "NOUN"], ["B-PER", "E-PER", "U-PER"], ["b-per"], ["B-"], ["BB-PER"]):
        assert detect_scheme(not_prefixed) is None, not_prefixed
    for tag_set in (["B-PER"], ["B-PER", "I-PER", "O"], ["E-PER", "O"], ["B-PER", "E-PER", "S-PER"], ["B-PER", "U-PER", "L-PER"]):
        assert detect_scheme(tag_set) == seqeval_scheme.auto_detect([tag_set]).__name__


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on a corpus of one tag; labels= is passed
def test_pos_tables_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        references, predictions = random_corpus(rng, UPOS[: rng.integers(2, len(UPOS))], change=0.4)
        flat_refs, flat_preds = sum(references, []), sum(predictions, [])
        scores = sequence_labelling_scores(references, predictions)  # auto: UPOS is no prefix scheme
        if not flat_refs:
            continue
        labels = sorted(set(flat_refs) | set(flat_preds))
        expected = {"accuracy": accuracy_score(references, predictions), "per_tag": {}}
        table = precision_recall_fscore_support(flat_refs, flat_preds, labels=labels, zero_division=0)
        for label, p, r, f, s in zip(labels, *table):
            expected["per_tag"][label] = {"precision": p, "recall": r, "f1": f, "support": s}
        for average in ("macro", "weighted"):
            p, r, f, _ = precision_recall_fscore_support(flat_refs, flat_preds, labels=labels, average=average, zero_division=0)
            expected |= {f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f}
        assert scores["scheme"] is None
        assert_same(scores, expected)
        assert scores["confusion_matrix"] == {"labels": labels, "matrix": confusion_matrix(flat_refs, flat_preds, labels=labels).tolist()}


def test_pos_tag_only_predicted_or_only_referenced() -> None:
    scores = sequence_labelling_scores([["NOUN", "NOUN", "VERB"]], [["NOUN", "ADJ", "NOUN"]], scheme=None)
    assert scores["per_tag"] == {
        "ADJ": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "NOUN": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "VERB": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
    }
    assert scores["macro_f1"] == pytest.approx(0.5 / 3)
    assert scores["confusion_matrix"]["matrix"] == [[0, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_evaluate_metric_module() -> None:
    rng = np.random.default_rng(4)
    references, predictions = [], []
    for _ in range(5):
        batch = random_corpus(rng, NER)
        references += batch[0]
        predictions += batch[1]
    for mode in ("default", "strict"):
        metric = load_metric("sequence_labelling")
        for start in range(0, len(references), 3):
            metric.add_batch(predictions=predictions[start : start + 3], references=references[start : start + 3])
        assert_same(metric.compute(scheme="IOB2", mode=mode), sequence_labelling_scores(references, predictions, "IOB2", mode))
    pos = load_metric("sequence_labelling").compute(predictions=[["NOUN", "VERB"]], references=[["NOUN", "NOUN"]], scheme=None)
    assert pos["per_tag"]["NOUN"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    empty = load_metric("sequence_labelling").compute()
    assert empty["tokens"] == 0 and math.isnan(empty["accuracy"])


# Entity spans, against the pipeline.

SENTENCES = [
    "Anna works at Acme Corp in Berlin.",
    "Bob visited Paris, London and Zurich with Mia!",
    "Berlins Parisia Xyz New York",  # multi-piece words and an unknown word
    "the city",
    "Mia, Anna and Bob work in New York at Acme.",
]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory):
    """A token-classification pipeline over a tiny random BERT and WordPiece tokenizer, saved and loaded offline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast, pipeline

    words = "Anna Berlin New York works at Acme Corp in the city and Bob visited Paris with Mia work . , ! Lon ##don Zu ##rich ##s ##ia"
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words.split()])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    backend.decoder = decoders.WordPiece()
    roles = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, id2label=dict(enumerate(NER)), label2id={tag: i for i, tag in enumerate(NER)},
    )  # fmt: skip
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():  # decisive, varied tags (the default init gives near-uniform ones); O as often as the rest
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.copy_(torch.tensor([1.5, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    directory = tmp_path_factory.mktemp("tagger")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return pipeline("token-classification", model=str(directory), aggregation_strategy="first", device="cpu")


def word_predictions(tagger, text: str) -> tuple[list[str], list[tuple[int, int]], list[str], list[float]]:
    """Per pre-tokenizer word: the text, offsets, argmax tag and probability of the first piece."""
    encoding = tagger.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoding.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        probabilities = tagger.model(**encoding).logits[0].softmax(-1)
    pieces: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids()):
        if word is not None:
            pieces.setdefault(word, []).append(position)
    spans = [(offsets[p[0]][0], offsets[p[-1]][1]) for p in pieces.values()]
    firsts = probabilities[[p[0] for p in pieces.values()]]
    tags = [tagger.model.config.id2label[int(i)] for i in firsts.argmax(-1)]
    return [text[a:b] for a, b in spans], spans, tags, firsts.max(-1).values.tolist()


def assert_spans_equal(ours: list[dict], theirs: list[dict], tolerance: float) -> None:
    """Our spans against the pipeline's entity groups: type, start, end, and score to `tolerance`."""
    assert [(s["type"], s["start"], s["end"]) for s in ours] == [(e["entity_group"], e["start"], e["end"]) for e in theirs]
    assert [s["score"] for s in ours] == pytest.approx([float(e["score"]) for e in theirs], abs=tolerance)


def test_entity_spans_equal_the_pipeline(tagger) -> None:
    seen_tags = []
    for text in SENTENCES:
        words, offsets, tags, scores = word_predictions(tagger, text)
        seen_tags += tags
        ours = entity_spans(words, offsets, tags, scores, text)
        assert_spans_equal(ours, tagger(text), 1e-5)
        assert all(span["text"] == text[span["start"] : span["end"]] for span in ours)
        assert [(s["type"], s["first_word"], s["last_word"] + 1) for s in ours] == entities(tags)
    assert {"O", "B-PER", "I-ORG"} <= set(seen_tags)  # the random tagger exercises O, B- and I- words


def test_entity_spans_of_pre_split_words_equal_the_pipeline(tagger) -> None:
    words = "Anna visited New York with Bob and Mia".split()
    joined = " ".join(words)
    _, _, tags, scores = word_predictions(tagger, joined)  # one piece-group per word: no punctuation to split off
    ours = entity_spans(words, None, tags, scores)
    assert_spans_equal(ours, tagger(words, is_split_into_words=True)[0], 1e-5)
    assert all(span["text"] == joined[span["start"] : span["end"]] for span in ours)


def test_grouping_equals_the_pipeline_group_entities(tagger) -> None:
    """Tag sequences a model may or may not emit, through the pipeline's own grouping of word-level entities."""
    rng = np.random.default_rng(5)
    hand = [["B-PER", "B-PER"], ["B-PER", "I-LOC"], ["O", "I-PER", "I-PER"], ["I-ORG"], ["O", "O"], [], ["PER", "PER", "I-PER", "O"]]
    sequences = hand + [rng.choice(NER + ["MISC"], size=rng.integers(1, 12)).tolist() for _ in range(300)]
    for tags in sequences:
        words = [f"w{i}" for i in range(len(tags))]
        offsets = [(3 * i, 3 * i + 2) for i in range(len(tags))]
        scores = rng.random(len(tags)).tolist()
        word_entities = [
            {"entity": tag, "score": score, "word": word, "start": start, "end": end}
            for tag, score, word, (start, end) in zip(tags, scores, words, offsets)
        ]
        expected = [e for e in tagger.group_entities(word_entities) if e["entity_group"] != "O"]  # ignore_labels=["O"]
        assert_spans_equal(entity_spans(words, offsets, tags, scores), expected, 1e-12)


def test_entity_spans_iobes_follow_default_mode_entities() -> None:
    rng = np.random.default_rng(6)
    for _ in range(200):
        tags = rng.choice(scheme_tags("IOBES"), size=rng.integers(0, 12)).tolist()
        spans = entity_spans(tags, None, tags, [1.0] * len(tags))
        assert [(s["type"], s["first_word"], s["last_word"] + 1) for s in spans] == entities(tags, "IOBES")


def test_entity_spans_text_and_offsets() -> None:
    words, tags, scores = ["Anna", "lives", "in", "New", "York"], ["B-PER", "O", "O", "B-LOC", "I-LOC"], [0.9, 1, 1, 0.8, 0.6]
    person, place = entity_spans(words, None, tags, scores)
    assert person == {"type": "PER", "text": "Anna", "start": 0, "end": 4, "score": 0.9, "first_word": 0, "last_word": 0}
    assert place == {"type": "LOC", "text": "New York", "start": 14, "end": 22, "score": pytest.approx(0.7), "first_word": 3, "last_word": 4}
    text = "Anna  lives in New\tYork."
    assert [s["text"] for s in entity_spans(words, None, tags, scores, text)] == ["Anna", "New\tYork"]
    assert entity_spans(words, [(0, 4), (6, 11), (12, 14), (15, 18), (19, 23)], tags, scores)[1]["text"] == "New York"
    with pytest.raises(ValueError, match="not in the text"):
        entity_spans(words, None, tags, scores, "Anna lives in York")
    with pytest.raises(ValueError, match="length"):
        entity_spans(words, None, tags[:-1], scores)
