"""Questions on contexts with answer spans (extractive QA, SQuAD layout): read and check them.

Contract:

- `read_qa(location, format, fields, skip_bad_answers)` reads every question of one file into `QAExamples`,
  in file order. Formats, under "auto" by extension:
  - jsonl (.jsonl/.ndjson; .json unless it is one SQuAD object): one record per line, Hugging Face's "squad"
    layout `{"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}`.
  - squad (.json holding `{"data": [...]}`): the nested file SQuAD ships, `data → paragraphs → {context, qas →
    {id, question, answers: [{text, answer_start}], is_impossible}}`; a question's place is
    `FILE: data[i].paragraphs[j].qas[k]`, as the file has no line per question.
  - parquet (.parquet/.pq), a `save_to_disk` dir (`DIR:SPLIT`) or a hub id: rows, numbered from 1.
- Every problem is a one-line `DataError` at `FILE:LINE` (`seqlm.io.records`): a missing question or context
  (the fields there are, and the `data.*_field` key to set), one that is not a string, an empty or
  whitespace-only question or context, answers that are not `{text: [strings], answer_start: [ints]}` of equal
  lengths, an answer text that is empty, and an `answer_start` where the context does not hold the answer's
  text (the message says where the text is, when the context holds it). With `skip_bad_answers` such an answer
  is dropped and counted (`QAExamples.skipped_answers`); a question left without answers is dropped too
  (`skipped_questions`), never kept as "unanswerable".
- Empty answer lists are SQuAD v2's unanswerable questions (kept: they train the model to point at [CLS]).
- Texts are kept exactly as written (offsets index the context as given; no strip, no normalisation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.errors import DataError
from seqlm.io import records

_EXTENSION_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_FORMAT_FIX = "set data.format (jsonl, squad, parquet, disk)"


@dataclass(frozen=True)
class QAFields:
    id: str = "id"
    question: str = "question"
    context: str = "context"
    answers: str = "answers"


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start) in the context; () when unanswerable
    where: str  # FILE:LINE, for messages


@dataclass
class QAExamples:
    source: str
    examples: list[QAExample] = field(default_factory=list)
    skipped_answers: int = 0
    skipped_questions: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[QAExample]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> QAExample:
        return self.examples[index]

    def subset(self, indices: np.ndarray) -> QAExamples:
        return QAExamples(self.source, [self.examples[int(i)] for i in indices])


def read_qa(location: str, format: str = "auto", fields: QAFields = QAFields(), skip_bad_answers: bool = False) -> QAExamples:
    """Every question of `location`, checked (see the module docstring)."""
    kind = records.resolve_format(location, format, _EXTENSION_FORMATS, "JSONL, SQuAD JSON or Parquet", _FORMAT_FIX)
    path = Path(location).expanduser()
    if kind == "json":
        kind = "squad" if _is_squad_object(path) else "jsonl"
    if kind == "squad":
        rows: Iterator[tuple[str, dict[str, Any]]] = _squad_rows(path, fields)
    elif kind == "jsonl":
        rows = ((f"{path}:{number}", record) for number, record in records.jsonl_records(path))
    else:
        dataset = records.open_dataset(location, kind, _FORMAT_FIX)
        rows = ((f"{location}: row {number}", dict(row)) for number, row in enumerate(dataset, start=1))
    examples = QAExamples(location)
    for where, record in rows:
        example, skipped = _example(where, record, fields, skip_bad_answers)
        examples.skipped_answers += skipped
        if example is None:
            examples.skipped_questions += 1
        else:
            examples.examples.append(example)
    if not examples.examples:
        raise DataError(
            f"{location}: no questions; give a SQuAD-layout file with one question per line (JSONL) or a SQuAD JSON file"
        )
    return examples


def _is_squad_object(path: Path) -> bool:
    """A .json file that is one object with a "data" list (SQuAD's own files), not JSON Lines."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"{"):
        return False
    try:
        whole = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # read as JSON Lines: its reader names the bad line
    return isinstance(whole, dict) and isinstance(whole.get("data"), list)


def _squad_rows(path: Path, fields: QAFields) -> Iterator[tuple[str, dict[str, Any]]]:
    """SQuAD's nested layout flattened to HF "squad" rows; `is_impossible` questions get empty answers."""
    data = json.loads(path.read_text(encoding="utf-8-sig"))["data"]
    for i, article in enumerate(data):
        for j, paragraph in enumerate(article.get("paragraphs") or [] if isinstance(article, dict) else []):
            for k, qa in enumerate(paragraph.get("qas") or [] if isinstance(paragraph, dict) else []):
                where = f"{path}: data[{i}].paragraphs[{j}].qas[{k}]"
                if not isinstance(qa, dict):
                    raise DataError(f"{where}: a {type(qa).__name__}, not a question object; fix the file")
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                    raise DataError(f"{where}: 'answers' is not a list of {{text, answer_start}} objects; fix the file")
                row = {key: value for key, value in qa.items() if key not in ("answers", "is_impossible")}
                if "context" in paragraph:
                    row[fields.context] = paragraph["context"]
                row[fields.answers] = {
                    "text": [a.get("text") for a in answers],
                    "answer_start": [a.get("answer_start") for a in answers],
                }
                yield where, row


def _text(where: str, record: dict[str, Any], name: str, setting: str, what: str) -> str:
    if name not in record:
        raise records.missing_field(where, record, name, setting)
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} holds {records.described(value)}, not text; give the {what} as a string")
    if not value.strip():
        raise DataError(f"{where}: field {name!r} is empty; give every question a non-empty {what}, or drop it")
    return value


def _example(where: str, record: dict[str, Any], fields: QAFields, skip: bool) -> tuple[QAExample | None, int]:
    """The checked example (None when every answer was bad and skipped) and how many answers were skipped."""
    question = _text(where, record, fields.question, "data.question_field", "question")
    context = _text(where, record, fields.context, "data.context_field", "context")
    if fields.answers not in record:
        raise records.missing_field(where, record, fields.answers, "data.answers_field")
    texts, starts = _answer_lists(where, record[fields.answers], fields.answers)
    answers, skipped = [], 0
    for n, (text, start) in enumerate(zip(texts, starts), start=1):
        if context[start : start + len(text)] == text:
            answers.append((text, start))
            continue
        if not skip:
            found = context.find(text)
            there = f"the text is at {found}" if found >= 0 else "the context does not hold the text"
            raise DataError(
                f"{where}: answer {n} {text!r} is not at answer_start {start} of the context "
                f"(there: {context[start : start + len(text)]!r}; {there}); fix answer_start, or set data.skip_bad_answers: true"
            )
        skipped += 1
    if skipped and not answers:
        return None, skipped
    identifier = record.get(fields.id)
    return QAExample(str(identifier) if identifier is not None else where, question, context, tuple(answers), where), skipped


def _answer_lists(where: str, value: Any, name: str) -> tuple[list[str], list[int]]:
    fix = f'give {name} as {{"text": [strings], "answer_start": [character offsets]}} (empty lists: unanswerable)'
    if not isinstance(value, dict) or not isinstance(value.get("text"), list) or not isinstance(value.get("answer_start"), list):
        raise DataError(f"{where}: field {name!r} holds {records.described(value)}; {fix}")
    texts, starts = value["text"], value["answer_start"]
    if len(texts) != len(starts):
        raise DataError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values; {fix}")
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text:
            raise DataError(f"{where}: an answer text is {records.described(text) if text != '' else 'empty'}; {fix}")
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise DataError(f"{where}: answer_start {records.described(start)} is not a character offset (an integer ≥ 0); {fix}")
    return texts, [int(start) for start in starts]
