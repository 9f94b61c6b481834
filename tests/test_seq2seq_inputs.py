"""seq2seq inputs: a tokenizer from both sides of parallel data, the source prefix a model was trained with,
and `seqlm predict` against the reference generation a transformers pipeline used (greedy, one input at a time)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from conftest import invoke, seqlm
from pydantic import ValidationError

from seqlm.config.schema import CorpusConfig, TokenizeConfig
from seqlm.data.corpus import Corpus
from seqlm.errors import DataError

REPO = Path(__file__).resolve().parents[1]
PARALLEL = REPO / "data" / "tasks" / "translation" / "es-en"


# --------------------------------------------------------------------------- tokenize: several text fields


def _pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_each_listed_field_is_a_document_in_order(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "source": "uno", "target": "one"},
        {"id": 2, "source": "dos", "target": "  "},
        {"id": 3, "source": "tres", "target": "three"},
    ]
    jsonl = _pairs(tmp_path / "pairs.jsonl", rows)
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "source", "target"])
        writer.writeheader()
        writer.writerows(rows)
    expected = ["uno", "one", "dos", "tres", "three"]  # record after record, fields in the order listed; blank skipped
    for path in (jsonl, tmp_path / "pairs.csv"):
        corpus = Corpus(CorpusConfig(train=[str(path)], validation=[str(path)], text_column=["source", "target"]))
        assert list(corpus.split_documents("train")) == expected
    reversed_fields = Corpus(CorpusConfig(train=[str(jsonl)], validation=[str(jsonl)], text_column=["target", "source"]))
    assert list(reversed_fields.split_documents("train"))[:2] == ["one", "uno"]
    one = Corpus(CorpusConfig(train=[str(jsonl)], validation=[str(jsonl)], text_column="source"))
    assert list(one.split_documents("train")) == ["uno", "dos", "tres"]  # a single name reads as before


def test_a_record_missing_a_listed_field_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = _pairs(
        tmp_path / "pairs.jsonl", [{"source": "uno", "target": "one"}, {"source": "dos"}, {"source": "tres", "target": 3}]
    )
    corpus = Corpus(CorpusConfig(train=[str(path)], validation=[str(path)], text_column=["source", "target"]))
    with pytest.raises(DataError, match=rf"{path}:2: no 'target' field \(fields: 'source'\).*corpus.text_column"):
        list(corpus.split_documents("train"))
    _pairs(path, [{"source": "uno", "target": "one"}, {"source": "tres", "target": 3}])
    with pytest.raises(DataError, match=rf"{path}:2: field 'target' holds an int \(3\), not text"):
        list(corpus.split_documents("train"))
    with pytest.raises(ValidationError, match="twice"):
        CorpusConfig(train=["x.jsonl"], text_column=["source", "source"])
    with pytest.raises(ValidationError, match="at least one"):
        CorpusConfig(train=["x.jsonl"], text_column=[])


def test_tokenize_cli_learns_from_sources_and_targets(tmp_path: Path) -> None:
    """The shipped es-en tokenize config (both fields), on the first 300 verses: Spanish words are learnt too."""
    config = yaml.safe_load((REPO / "configs" / "tiny" / "t5_translate_tokenize.yaml").read_text(encoding="utf-8"))
    assert config["corpus"]["text_column"] == ["source", "target"]
    lines = (PARALLEL / "train.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config["output_dir"] = str(tmp_path / "tok")
    config["corpus"].update(train=[str(train)], validation=[str(PARALLEL / "validation.jsonl")], max_documents=None)
    config["tokenizer"]["vocab_size"] = 1000
    TokenizeConfig.model_validate(config)
    (tmp_path / "tokenize.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    seqlm("tokenize", tmp_path / "tokenize.yaml")
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["n_documents"] == 600  # a source and a target per verse
    assert meta["splits"]["validation"]["n_documents"] == 2 * 435
    vocab = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert {"Ġporque", "Ġque", "Ġlos"} <= vocab.keys()  # Spanish words (sources)
    assert {"Ġfather", "Ġthe"} <= vocab.keys()  # English words (targets)


# --------------------------------------------------------------------------- a trained tiny T5 (shared)

PREFIX = "copy: "
WORDS = (
    "apple bread chair dance eagle flute grape house igloo jelly knife lemon mango night ocean "
    "piano queen river stone tiger umbra violet water xenon yacht zebra amber blaze cloud drift"
).split()


def _copy_rows(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def copier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny T5 fine-tuned through `seqlm finetune` to copy word sequences after the prefix "copy: " (400 steps:
    most outputs right, some not, so a mismatch in how predict generates would show)."""
    root = tmp_path_factory.mktemp("copier")
    (root / "corpus.txt").write_text("\n".join(_copy_rows(300, seed=0)) + "\n", encoding="utf-8")
    tokenize = {"output_dir": str(root / "tok"), "corpus": {"train": str(root / "corpus.txt")},
                "tokenizer": {"kind": "bpe", "vocab_size": 400, "min_frequency": 1}}  # fmt: skip
    (root / "tokenize.yaml").write_text(yaml.safe_dump(tokenize), encoding="utf-8")
    seqlm("tokenize", root / "tokenize.yaml")
    rows = _copy_rows(12_800, seed=1)
    for name, part in (("train", rows[:12_760]), ("validation", rows[12_760:])):
        _pairs(root / f"{name}.jsonl", [{"source": row, "target": row} for row in part])
    finetune = {
        "output_dir": str(root / "run"), "task": "seq2seq",
        "model": {"family": "t5", "tokenizer": str(root / "tok"), "d_model": 64, "n_heads": 4, "d_ff": 128, "dropout": 0.0},
        "data": {"train": str(root / "train.jsonl"), "validation": str(root / "validation.jsonl"), "source_prefix": PREFIX},
        "optim": {"lr": 3.0e-3, "warmup_steps": 20},
        "training": {"batch_size": 32, "max_steps": 400, "eval_every": 400, "eval_generate_examples": 0, "precision": "fp32", "log_every": 100},
    }  # fmt: skip
    (root / "finetune.yaml").write_text(yaml.safe_dump(finetune), encoding="utf-8")
    seqlm("finetune", root / "finetune.yaml", "--device", "cpu")
    return root / "run" / "model"


def _inputs(n: int = 12) -> list[str]:
    return _copy_rows(n, seed=7)


def _predict(model: Path, inputs: Path, output: Path, *settings: str) -> None:
    sets = [part for setting in ("generation.max_new_tokens=16", *settings) for part in ("--set", setting)]
    result = invoke("predict", "--device", "cpu", "--model", model, "-i", inputs, "-o", output, "--set", "batch_size=5", *sets)
    assert result.exit_code == 0, result.output


def _reference(model_dir: Path, texts: list[str], prefix: str, **beams: int) -> list[list[tuple[str, float | None]]]:
    """What transformers 4's text2text-generation / translation / summarization pipelines did (transformers 5 removed
    them), one input at a time: tokenizer(prefix + text), model.generate, decode without special tokens.
    Per input: (text, sequence score or None) of each returned sequence."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    results = []
    for text in texts:
        encoded = tokenizer(prefix + text, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=16, do_sample=False, return_dict_in_generate=True,
                                    output_scores=True, **({"num_beams": 1} | beams))  # fmt: skip
        decoded = tokenizer.batch_decode(output.sequences, skip_special_tokens=True)
        scores = getattr(output, "sequences_scores", None)
        results.append(list(zip(decoded, scores.tolist() if scores is not None else [None] * len(decoded))))
    return results


def test_transformers_5_has_no_text2text_pipelines_but_reads_the_saved_prefix(copier: Path) -> None:
    """Why `_reference` stands in for the pipelines; the generic Pipeline still takes `prefix` from config.json."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4 still has these pipelines")
    for task in ("text2text-generation", "translation", "summarization"):
        with pytest.raises(KeyError, match="removed"):
            transformers.pipeline(task, model=str(copier))
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(copier)
    assert model.config.prefix == PREFIX


def test_finetune_saves_the_prefix_and_predict_matches_the_reference_generation(copier: Path, tmp_path: Path) -> None:
    saved = json.loads((copier / "config.json").read_text(encoding="utf-8"))
    assert saved["prefix"] == PREFIX  # where HF pipelines look for it
    texts = _inputs()
    (tmp_path / "inputs.jsonl").write_text(
        "".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    _predict(copier, tmp_path / "inputs.jsonl", tmp_path / "out.jsonl")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [f"n{i}" for i in range(len(texts))]  # input order, though batches go longest first
    assert [r["input"] for r in records] == texts  # as given, without the prefix
    outputs = [r["output"] for r in records]
    assert outputs == [best for [(best, _)] in _reference(copier, texts, PREFIX)]  # greedy, batched and padded = one at a time
    # The model learned, not all of it: non-trivial outputs (400 steps: most begin right, a few are exact copies).
    assert sum(o.split()[:2] == t.split()[:2] for o, t in zip(outputs, texts)) >= 9
    assert sum(o == t for o, t in zip(outputs, texts)) >= 2 and len(set(outputs)) == len(texts)

    _predict(copier, tmp_path / "inputs.jsonl", tmp_path / "bare.jsonl", "source_prefix=''")  # override: no prefix
    bare = [json.loads(line)["output"] for line in (tmp_path / "bare.jsonl").read_text(encoding="utf-8").splitlines()]
    assert bare == [best for [(best, _)] in _reference(copier, texts, "")]


def test_beam_candidates_with_scores_and_csv_output(copier: Path, tmp_path: Path) -> None:
    texts = _inputs(6)
    (tmp_path / "inputs.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    _predict(copier, tmp_path / "inputs.txt", tmp_path / "out.csv", "generation.num_beams=2", "generation.num_return_sequences=2")
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["input"] for row in rows] == texts
    assert list(rows[0]) == ["input", "outputs", "scores"]
    reference = _reference(copier, texts, PREFIX, num_beams=2, num_return_sequences=2)
    for row, expected in zip(rows, reference):
        outputs, scores = json.loads(row["outputs"]), json.loads(row["scores"])
        assert outputs == [text for text, _ in expected] and len(outputs) == 2 and outputs[0] != outputs[1]
        assert scores == pytest.approx([score for _, score in expected], abs=1e-4)
        assert scores[0] >= scores[1]  # best first


def test_evaluate_uses_the_saved_prefix_unless_overridden(copier: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "test.jsonl", [{"source": t, "target": t} for t in _inputs(16)])
    scores = {}
    for name, prefix in (("saved", None), ("none", "")):
        config = {"model": str(copier), "data": str(data), "output_dir": str(tmp_path / name), "source_prefix": prefix,
                  "generation": {"max_new_tokens": 16}}  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        seqlm("evaluate", tmp_path / f"{name}.yaml", "--device", "cpu")
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text(encoding="utf-8"))
    assert scores["saved"]["source_prefix"] == PREFIX and scores["none"]["source_prefix"] == ""
    assert scores["saved"]["loss"] < scores["none"]["loss"]  # trained with the prefix, it copies best with it
