"""Token-classification metrics (POS tagging, NER), computed offline and equal to seqeval and scikit-learn.

Contract:

* `detect_scheme(tag_names)`: "IOB2", "IOE2", "IOBES" or "BILOU" when every tag is "O" or `X-TYPE` with X from one
  scheme's prefixes, else None (a POS-like set such as UPOS). A tag set cannot tell IOB1 from IOB2 (both use B-, I-, O;
  only the sequences differ), nor IOE1 from IOE2: detection answers IOB2 / IOE2, and a caller whose data is IOB1 or
  IOE1 says so. A set of "O" alone is IOB2; an empty set is None.
* `entities(tags, scheme, mode)`: the (type, start, end) spans of one tag sequence, `end` exclusive (seqeval's
  `get_entities` reports an inclusive end: ours is its end + 1). mode="default" is seqeval's `get_entities`
  (conlleval: an I- after O or after another type starts an entity, a type change ends one, B- always starts one; the
  scheme is not checked, malformed tags are read as seqeval reads them). mode="strict" is seqeval's `mode="strict"`
  with `scheme=` that scheme (`seqeval.scheme.Tokens`): only well-formed spans count, e.g. IOB2 drops an I- without
  its B-; a prefix the scheme does not allow raises ValueError, as seqeval does. One deliberate difference: seqeval's
  default mode does not know BILOU's L- and U- (it reads them as malformed tags); here default mode reads them as
  IOBES's E- and S-.
* `sequence_labelling_scores(references, predictions, scheme="auto", mode="default")`: lists of tag sequences.
  Always `accuracy` (correct tags / all tags, seqeval's `accuracy_score`) and `tokens`, and `scheme` (the one used).
  scheme="auto" detects it from the tags seen in both; None scores the tags as plain classes (POS).
  - A prefix scheme: `precision`, `recall`, `f1` micro-averaged over entities (seqeval's `precision_score` etc.),
    `macro_*`, `weighted_*` and `per_type` {TYPE: {precision, recall, f1, support}} = seqeval's
    `classification_report(output_dict=True)` rows ("f1-score" there), `entities` (reference) and
    `predicted_entities` counts. An entity matches when type, start and end match in the same sequence.
  - None: `per_tag` {tag: {precision, recall, f1, support}} = scikit-learn's `precision_recall_fscore_support`
    over the sorted tags seen in either, `macro_*` and `weighted_*` (`average="macro"/"weighted"`), and
    `confusion_matrix` {"labels", "matrix"}: matrix[i][j] counts tokens of reference tag i predicted as j.
  A ratio with a zero denominator is 0.0 (seqeval's and scikit-learn's zero_division default, without the warning);
  a macro average over no type at all is nan (seqeval: the mean of nothing), a weighted one over no reference
  entity 0.0 (seqeval); with no tokens accuracy and the POS averages are nan (where seqeval and sklearn raise).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
MODES = ("default", "strict")
_PREFIXED = re.compile(r"([A-Z])-(.+)", re.DOTALL)

# detect_scheme: the first scheme whose prefixes hold all the tag set's prefixes wins (B/I alone → IOB2; E → IOE2 ...).
_DETECT = (("IOB2", frozenset("BI")), ("IOE2", frozenset("IE")), ("IOBES", frozenset("BIES")), ("BILOU", frozenset("BILU")))


def detect_scheme(tag_names: Iterable[str]) -> str | None:
    """The tagging scheme of a label set (see the module docstring), or None when it is not prefix-style."""
    names = set(tag_names)
    if not names:
        return None
    prefixes = set()
    for name in names - {"O"}:
        match = _PREFIXED.fullmatch(name)
        if match is None:
            return None
        prefixes.add(match.group(1))
    return next((scheme for scheme, allowed in _DETECT if prefixes <= allowed), None)


def entities(tags: Sequence[str], scheme: str = "IOB2", mode: str = "default") -> list[tuple[str, int, int]]:
    """The entity spans (type, start, end exclusive) of one tag sequence, as seqeval finds them."""
    _check_scheme(scheme, mode)
    tags = list(tags)
    if any(not tag for tag in tags):
        raise ValueError("an empty string is not a tag")
    return _strict_entities(tags, scheme) if mode == "strict" else _default_entities(tags, scheme == "BILOU")


# Default mode: seqeval.metrics.sequence_labeling.get_entities. Whether a chunk ends before position i and whether one
# starts at i depend only on the tags at i - 1 and i (its end_of_chunk, start_of_chunk), so numpy decides both for all
# positions at once; a chunk ending before i began at the last start before i.
_BILOU_AS_IOBES = {"L": "E", "U": "S"}


def _default_entities(tags: list[str], bilou: bool) -> list[tuple[str, int, int]]:
    codes = {"": 0}  # the state before the first tag: letter "O", type "" (seqeval's; not "O"'s type "_")
    # A trailing O closes a chunk at the end. One Python step per tag (its code); the rest is per distinct tag or numpy.
    ids = np.fromiter((codes.setdefault(tag, len(codes)) for tag in ["", *tags, "O"]), dtype=np.int64, count=len(tags) + 2)
    letters, type_names = ["O"], [""]
    for tag in list(codes)[1:]:
        letters.append(_BILOU_AS_IOBES.get(tag[0], tag[0]) if bilou else tag[0])
        type_names.append(tag[1:].split("-", maxsplit=1)[-1] or "_")
    type_codes = {name: i for i, name in enumerate(dict.fromkeys(type_names))}
    letter = np.array(letters)[ids]
    type_ = np.array([type_codes[name] for name in type_names])[ids]
    prev, cur, prev_type, cur_type = letter[:-1], letter[1:], type_[:-1], type_[1:]
    changed = prev_type != cur_type
    ends = np.isin(prev, ["E", "S"]) | (np.isin(prev, ["B", "I"]) & np.isin(cur, ["B", "S", "O"]))
    ends |= ~np.isin(prev, ["O", "."]) & changed
    starts = np.isin(cur, ["B", "S"]) | (np.isin(prev, ["E", "S", "O"]) & np.isin(cur, ["E", "I"]))
    starts |= ~np.isin(cur, ["O", "."]) & changed
    end_at, start_at = np.flatnonzero(ends), np.flatnonzero(starts)
    # The last start before each end; 0 when none (seqeval's initial begin, reachable with malformed tags only).
    begin = np.concatenate([[0], start_at])[np.searchsorted(start_at, end_at)]
    names = list(type_codes)
    return [(names[t], b, e) for t, b, e in zip(prev_type[end_at].tolist(), begin.tolist(), end_at.tolist())]


# Strict mode: seqeval.scheme's pattern tables. A pattern is (previous prefixes, current prefixes, type condition);
# "*" stands for any prefix. Compiled below into the set of (previous, current, same type) triples that match.
_ANY = "IOBESUL"
_STRICT_TABLES: dict[str, tuple[str, list[tuple[str, str, str]], list[tuple[str, str, str]], list[tuple[str, str, str]]]] = {
    # scheme: (allowed prefixes, start patterns, inside patterns, end patterns)
    "IOB1": (
        "IOB",
        [("O", "I", "any"), ("I", "I", "diff"), ("B", "I", "any"), ("I", "B", "same"), ("B", "B", "same")],
        [("B", "I", "same"), ("I", "I", "same")],
        [("I", "I", "diff"), ("I", "O", "any"), ("I", "B", "any"), ("B", "O", "any"), ("B", "I", "diff"), ("B", "B", "same")],
    ),
    "IOE1": (
        "IOE",
        [("O", "I", "any"), ("I", "I", "diff"), ("E", "I", "any"), ("E", "E", "same")],
        [("I", "I", "same"), ("I", "E", "same")],
        [("I", "I", "diff"), ("I", "O", "any"), ("I", "E", "diff"), ("E", "I", "same"), ("E", "E", "same")],
    ),
    "IOB2": (
        "IOB",
        [("*", "B", "any")],
        [("B", "I", "same"), ("I", "I", "same")],
        [("I", "O", "any"), ("I", "I", "diff"), ("I", "B", "any"), ("B", "O", "any"), ("B", "I", "diff"), ("B", "B", "any")],
    ),
    "IOE2": (
        "IOE",
        [("O", "I", "any"), ("O", "E", "any"), ("E", "I", "any"), ("E", "E", "any"), ("I", "I", "diff"), ("I", "E", "diff")],
        [("I", "E", "same"), ("I", "I", "same")],
        [("E", "*", "any")],
    ),
    "IOBES": (
        "IOBES",
        [("*", "B", "any"), ("*", "S", "any")],
        [("B", "I", "same"), ("B", "E", "same"), ("I", "I", "same"), ("I", "E", "same")],
        [("S", "*", "any"), ("E", "*", "any")],
    ),
    "BILOU": (
        "BILOU",
        [("*", "B", "any"), ("*", "U", "any")],
        [("B", "I", "same"), ("B", "L", "same"), ("I", "I", "same"), ("I", "L", "same")],
        [("U", "*", "any"), ("L", "*", "any")],
    ),
}


def _compile(patterns: list[tuple[str, str, str]]) -> frozenset[tuple[str, str, bool]]:
    return frozenset(
        (prev, cur, same)
        for prev_prefixes, cur_prefixes, condition in patterns
        for prev in (_ANY if prev_prefixes == "*" else prev_prefixes)
        for cur in (_ANY if cur_prefixes == "*" else cur_prefixes)
        for same in (True, False)
        if condition == "any" or (condition == "same") == same
    )


_STRICT = {scheme: (allowed, *map(_compile, tables)) for scheme, (allowed, *tables) in _STRICT_TABLES.items()}


def _strict_entities(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    allowed, start, inside, end = _STRICT[scheme]
    for tag in tags:
        if tag[0] not in allowed:
            raise ValueError(f"tag {tag!r} has a prefix that {scheme} does not allow ({', '.join(allowed)})")
    # seqeval's Token: prefix = first letter, type = the rest without its "-"s; the sequence ends with an O.
    tokens = [(tag[0], tag[1:].strip("-") or "_") for tag in tags] + [("O", "_")]
    found = []
    i, prev = 0, ("O", "_")
    while i < len(tokens):  # seqeval.scheme.Tokens.entities
        token = tokens[i]
        if (prev[0], token[0], prev[1] == token[1]) in start:
            stop, last = i + 1, token
            while (last[0], tokens[stop][0], last[1] == tokens[stop][1]) in inside:  # the final O is never inside
                last = tokens[stop]
                stop += 1
            if (last[0], tokens[stop][0], last[1] == tokens[stop][1]) in end:
                found.append((token[1], i, stop))
            i = stop
        else:
            i += 1
        prev = tokens[i - 1]
    return found


def _check_scheme(scheme: str, mode: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def sequence_labelling_scores(
    references: Sequence[Sequence[str]],
    predictions: Sequence[Sequence[str]],
    scheme: str | None = "auto",
    mode: str = "default",
) -> dict[str, Any]:
    """Accuracy plus entity scores (prefix scheme) or per-tag scores and confusion matrix (scheme None)."""
    references = [list(tags) for tags in references]
    predictions = [list(tags) for tags in predictions]
    if [len(tags) for tags in references] != [len(tags) for tags in predictions]:
        raise ValueError("references and predictions differ in the number of sequences or of tags in a sequence")
    flat_references = [tag for tags in references for tag in tags]
    flat_predictions = [tag for tags in predictions for tag in tags]
    tokens = len(flat_references)
    correct = sum(map(operator.eq, flat_references, flat_predictions))
    if scheme == "auto":
        scheme = detect_scheme(set(flat_references) | set(flat_predictions))
    result: dict[str, Any] = {"accuracy": correct / tokens if tokens else math.nan, "tokens": tokens, "scheme": scheme}
    if scheme is None:
        return result | _tag_scores(flat_references, flat_predictions)
    _check_scheme(scheme, mode)
    return result | _entity_scores(_entity_sets(references, scheme, mode), _entity_sets(predictions, scheme, mode))


def _entity_sets(sequences: list[list[str]], scheme: str, mode: str) -> dict[str, set[tuple[int, int, int]]]:
    """type → {(sequence, start, end)}."""
    if mode == "default":
        # seqeval joins the sequences with an "O" between them and reads the whole: an entity cannot cross sequences, and
        # each sequence after the first starts after an O (type "_") rather than from scratch (type "").
        joined = [tag for tags in sequences for tag in [*tags, "O"]]
        spans = [(type_, (0, start, end)) for type_, start, end in entities(joined, scheme, mode)]
    else:
        spans = [(type_, (i, start, end)) for i, tags in enumerate(sequences) for type_, start, end in entities(tags, scheme, mode)]
    by_type: dict[str, set[tuple[int, int, int]]] = {}
    for type_, key in spans:
        by_type.setdefault(type_, set()).add(key)
    return by_type


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0 (seqeval's and sklearn's _prf_divide)."""
    out = np.zeros(denominator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _rows(names: list[str], precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray) -> dict:
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }


def _averages(precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray, no_support: float) -> dict:
    """macro_* (unweighted mean; nan over no class) and weighted_* (by support; `no_support` when it sums to 0)."""
    named = (("precision", precision), ("recall", recall), ("f1", f1))
    macro = {f"macro_{name}": float(np.mean(values)) if values.size else math.nan for name, values in named}
    total = support.sum()
    return macro | {f"weighted_{name}": float(np.average(values, weights=support)) if total else no_support for name, values in named}


def _entity_scores(true: dict[str, set], predicted: dict[str, set]) -> dict[str, Any]:
    types = sorted(true.keys() | predicted.keys())
    hits = np.array([len(true.get(t, set()) & predicted.get(t, set())) for t in types], dtype=np.int64)
    n_predicted = np.array([len(predicted.get(t, ())) for t in types], dtype=np.int64)
    n_true = np.array([len(true.get(t, ())) for t in types], dtype=np.int64)

    def prf(hits: np.ndarray, n_predicted: np.ndarray, n_true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        precision, recall = _divide(hits, n_predicted), _divide(hits, n_true)
        denominator = precision + recall
        denominator[denominator == 0] = 1
        return precision, recall, 2 * precision * recall / denominator  # seqeval's formula, same rounding

    micro = prf(hits.sum(keepdims=True), n_predicted.sum(keepdims=True), n_true.sum(keepdims=True))
    per_type = prf(hits, n_predicted, n_true)
    return {
        "precision": float(micro[0][0]),
        "recall": float(micro[1][0]),
        "f1": float(micro[2][0]),
        **_averages(*per_type, n_true, no_support=0.0),
        "entities": int(n_true.sum()),
        "predicted_entities": int(n_predicted.sum()),
        "per_type": _rows(types, *per_type, n_true),
    }


def _tag_scores(references: list[str], predictions: list[str]) -> dict[str, Any]:
    labels = sorted(set(references) | set(predictions))
    index = {label: i for i, label in enumerate(labels)}
    n = len(labels)
    true_ids = np.fromiter(map(index.__getitem__, references), dtype=np.int64, count=len(references))
    predicted_ids = np.fromiter(map(index.__getitem__, predictions), dtype=np.int64, count=len(predictions))
    matrix = np.bincount(true_ids * n + predicted_ids, minlength=n * n).reshape(n, n)
    hits = np.diag(matrix)
    support, n_predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    precision, recall = _divide(hits, n_predicted), _divide(hits, support)
    f1 = _divide(2.0 * hits, 1.0 * support + n_predicted)  # sklearn's (1 + β²) tp / (β² (tp + fn) + tp + fp)
    return {
        **_averages(precision, recall, f1, support, no_support=math.nan),
        "per_tag": _rows(labels, precision, recall, f1, support),
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
    }
