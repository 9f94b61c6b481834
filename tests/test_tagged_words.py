"""Tagged sentences: JSONL, CoNLL columns (CoNLL-2003, UNER iob2) and CoNLL-U read alike; problems at FILE:LINE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from seqlm.errors import ConfigError, DataError
from seqlm.io.tagged_words import TaggedSentences, read_tagged, split_words, tag_ids, tag_names


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(path: Path, rows: list[dict | str]) -> Path:
    return write(path, "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def fails(path: Path | str, pattern: str, **options) -> str:
    """The DataError message of reading `path`; it must start with `pattern` (a regex, FILE escaped for you)."""
    with pytest.raises(DataError) as caught:
        read_tagged(str(path), **options)
    message = str(caught.value)
    assert re.match(re.escape(str(path)) + pattern, message), message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats

# CoNLL-2003: token POS chunk tag, space-separated, -DOCSTART- between documents.
CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

#hashtag NN B-NP O
wins VBZ B-VP O
"""

# UNER English-EWT iob2 (as in en_ewt-ud-dev.iob2): comments, then `ID\tTOKEN\tTAG`, and annotator columns on some lines.
UNER = """# newdoc id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713
# sent_id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713-0001
# text = From the AP comes this story :
1\tFrom\tO
2\tthe\tO
3\tAP\tB-ORG\t-\tstephen
4\tcomes\tO
5\tthis\tO
6\tstory\tO
7\t:\tO

# sent_id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713-0002
# text = President Bush on Tuesday
1\tPresident\tO
2\tBush\tB-PER\t-\tstephen
3\ton\tO
4\tTuesday\tO
"""

CONLLU = """# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_jsonl_sentences_lines_extra_fields_and_integer_tags(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", [{"id": "a", "tokens": ["Hi", "Bob"], "tags": ["O", "B-PER"]}, "", {"tokens": ["x"], "tags": [3]}])
    data = read_tagged(str(path))
    assert data.words == [["Hi", "Bob"], ["x"]] and data.tags == [["O", "B-PER"], ["3"]]
    assert data.lines == [1, 3] and data.where(1) == f"{path}:3" and len(data) == 2
    assert data.extra == [{"id": "a"}, {}] and data.word_lines is None


def test_other_field_names(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.json", [{"words": ["a", "b"], "pos": ["X", "Y"]}])
    assert read_tagged(str(path), tokens_field="words", tags_field="pos").tags == [["X", "Y"]]


def test_conll2003_columns_docstart_and_a_hash_token(tmp_path: Path) -> None:
    path = write(tmp_path / "eng.conll", CONLL2003)
    data = read_tagged(str(path))
    assert data.words == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["#hashtag", "wins"]]
    assert data.tags == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["O", "O"]]
    assert data.lines == [3, 9, 14] and data.word_lines[1] == [9, 10] and data.extra is None
    assert read_tagged(str(path), conll_tag_column=1).tags[1] == ["NNP", "NNP"]


def test_two_column_tab_separated_iob2_and_windows_line_ends(tmp_path: Path) -> None:
    path = write(tmp_path / "t.iob2", "New York\tB-LOC\r\nis\tO\r\n\r\n\r\nfine\tO\r\n")
    data = read_tagged(str(path))
    assert data.words == [["New York", "is"], ["fine"]] and data.tags == [["B-LOC", "O"], ["O"]] and data.lines == [1, 5]


def test_uner_iob2_numbered_layout_reads_token_and_tag_not_the_annotator(tmp_path: Path) -> None:
    path = write(tmp_path / "en_ewt-ud-dev.iob2", UNER)
    data = read_tagged(str(path))
    assert data.words == [["From", "the", "AP", "comes", "this", "story", ":"], ["President", "Bush", "on", "Tuesday"]]
    assert data.tags == [["O", "O", "B-ORG", "O", "O", "O", "O"], ["O", "B-PER", "O", "O"]]
    assert data.lines == [4, 14] and data.word_lines[1] == [14, 15, 16, 17]


def test_conllu_syntactic_words_upos_and_xpos(tmp_path: Path) -> None:
    path = write(tmp_path / "t.conllu", CONLLU)
    data = read_tagged(str(path))
    assert data.words == [["I", "do", "n't", "know", "."], ["Hi"]]
    assert data.tags == [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["INTJ"]] and data.lines == [3, 12]
    assert read_tagged(str(path), conllu_column="xpos").tags[0] == ["PRP", "VBP", "RB", "VB", "."]


def test_without_tags_for_predict(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", [{"tokens": ["a"], "id": 1}, {"tokens": ["b"], "tags": ["X"], "id": 2}])
    data = read_tagged(str(path), require_tags=False)
    assert data.tags is None and data.extra == [{"id": 1}, {"id": 2}]
    words = write(tmp_path / "in.conll", "one\ntwo\n\nthree\n")
    assert read_tagged(str(words), require_tags=False).words == [["one", "two"], ["three"]]
    untagged = write(tmp_path / "in.conllu", CONLLU.replace("\tINTJ\t", "\t_\t"))
    assert read_tagged(str(untagged), require_tags=False).tags is None
    fails(untagged, r":12: no UPOS tag \('_'\) for 'Hi'; tag every word, or set data.conllu_column")


def test_parquet_and_a_saved_dataset_with_class_label_tags(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"tokens": [["a", "b"], ["c"]], "tags": [["X", "Y"], ["X"]]}), path)
    data = read_tagged(str(path))
    assert data.words == [["a", "b"], ["c"]] and data.tags == [["X", "Y"], ["X"]] and data.lines == [1, 2]
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "B-PER"]))})
    Dataset.from_dict({"tokens": [["Bob", "ran"]], "ner_tags": [[1, 0]]}, features=features).save_to_disk(str(tmp_path / "ds"))
    assert read_tagged(str(tmp_path / "ds"), tags_field="ner_tags").tags == [["B-PER", "O"]]
    with pytest.raises(DataError, match=r": no column 'tags' \(columns: 'tokens', 'ner_tags'\); set data.tags_field"):
        read_tagged(str(tmp_path / "ds"))


def test_subset_keeps_lines_and_extras(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", [{"tokens": [w], "tags": ["X"], "n": i} for i, w in enumerate("abc")])
    picked = read_tagged(str(path)).subset([2, 0])
    assert picked.words == [["c"], ["a"]] and picked.lines == [3, 1] and picked.extra == [{"n": 2}, {"n": 0}]
    conll = read_tagged(str(write(tmp_path / "t.conll", CONLL2003))).subset([1])
    assert conll.word_lines == [[9, 10]] and conll.extra is None


# --------------------------------------------------------------------------- problems, each at its FILE:LINE


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"tokens": ["a", "b"], "tags": ["X"]}, r":2: 2 tokens but 1 tags; give each token exactly one tag \('tokens', 'tags'\)"),
        ({"tokens": [], "tags": []}, r":2: field 'tokens' is an empty list; a sentence needs at least one word"),
        ({"tokens": ["a", 5], "tags": ["X", "X"]}, r":2: tokens\[1\] is an int \(5\), not a string; write every word as a JSON string"),
        ({"tokens": ["a", ""], "tags": ["X", "X"]}, r":2: tokens\[1\] is an empty string; give the word, or remove it and its tag"),
        ({"tokens": "a b", "tags": ["X", "X"]}, r":2: field 'tokens' holds a str \('a b'\), not a list of words"),
        ({"tokens": ["a"], "tags": [1.5]}, r":2: tags\[0\] is a float \(1.5\); a tag is a string \(or an integer\)"),
        ({"tokens": ["a"], "tags": [True]}, r":2: tags\[0\] is a bool \(True\); a tag is a string"),
        ({"tokens": ["a"], "tags": [""]}, r":2: tags\[0\] is an empty string; give every token a tag"),
        ({"tokens": ["a"], "tags": None}, r":2: field 'tags' is null; give every sentence its tags"),
        ({"words": ["a"], "tags": ["X"]}, r":2: no 'tokens' field \(fields: 'words', 'tags'\); add it or set data.tokens_field"),
        ({"tokens": ["a"], "pos": ["X"]}, r":2: no 'tags' field \(fields: 'tokens', 'pos'\); add it or set data.tags_field"),
        ('{"tokens": ["a"], "tags": ["X"]', r":2: not valid JSON \(Expecting ',' delimiter, column 32\); one JSON object per line"),
        ('["a"]', r":2: a JSON list, not an object; one JSON object per line"),
    ],
)
def test_jsonl_problems(tmp_path: Path, row: dict | str, pattern: str) -> None:
    path = jsonl(tmp_path / "t.jsonl", [{"tokens": ["ok"], "tags": ["X"]}, row])
    fails(path, pattern)


def test_column_file_problems(tmp_path: Path) -> None:
    fails(write(tmp_path / "a.conll", "EU B-ORG\nrejects\n"), r":2: 1 column\(s\) \('rejects'\), too few for the token \(column 0\) and its tag")
    fails(write(tmp_path / "b.iob2", UNER.replace("4\tcomes\tO", "4\tcomes")), r":7: 2 column\(s\) \('4' 'comes'\), too few")
    fails(write(tmp_path / "c.conll", "a\tO\n\tO\n"), r":2: an empty token; give the word, or remove the line")
    fails(write(tmp_path / "d.conllu", "1 I I PRON PRP _ 0 root _ _\n"), r":1: 1 column\(s\), CoNLL-U has 10 separated by tabs")
    fails(write(tmp_path / "e.conllu", "x\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n"), r":1: ID 'x' is not a word index")
    message = fails(write(tmp_path / "f.conll", "a b c\n"), r":1: 3 column\(s\)", conll_tag_column=5)
    assert "set data.conll_tag_column" in message
    with pytest.raises(ConfigError, match=r"^data.conll_tag_column 1 is the token's column in .*b.iob2; give the tag's column"):
        read_tagged(str(tmp_path / "b.iob2"), conll_tag_column=1)  # numbered layout: the token is column 1
    with pytest.raises(ConfigError, match=r"^data.format 'csv': not a format for tagged words"):
        read_tagged(str(tmp_path / "a.conll"), format="csv")


def test_file_level_problems(tmp_path: Path) -> None:
    fails(write(tmp_path / "bad.jsonl", b'{"tokens": ["a"], "tags": ["X"]}\n{"tokens": ["caf\xe9"]}\n'), r":2: not UTF-8 text")
    fails(write(tmp_path / "bad.conll", b"a O\n\ncaf\xe9 O\n"), r":3: not UTF-8 text .*re-encode the file as UTF-8")
    fails(tmp_path / "missing.jsonl", r": file not found; check the path")
    fails(write(tmp_path / "empty.jsonl", "\n\n"), r": no sentences; give one JSON object per line")
    fails(write(tmp_path / "comments.conllu", "# only a comment\n\n"), r": no sentences")
    fails(write(tmp_path / "t.txt", "a O\n"), r": unknown extension '.txt'; set data.format \(jsonl, conll or conllu\)")
    fails(write(tmp_path / "t.tsv", "a O\n"), r": unknown extension '.tsv'; name the file .jsonl, .conll or .conllu", config_section="")


# --------------------------------------------------------------------------- tag names and ids


def sentences(tags: list[list[str]], source: str = "v.jsonl") -> TaggedSentences:
    words = [[f"w{j}" for j in range(len(row))] for row in tags]
    return TaggedSentences(words, tags, list(range(1, len(tags) + 1)), source)


def test_tag_names_configured_order_else_sorted() -> None:
    train = sentences([["O", "B-PER"], ["I-PER", "O"]])
    assert tag_names(train, None) == ["B-PER", "I-PER", "O"]
    assert tag_names(train, ["O", "B-PER", "I-PER"]) == ["O", "B-PER", "I-PER"]
    assert tag_names(sentences([["10", "2"]]), None) == ["2", "10"]
    with pytest.raises(DataError, match=r"^data.labels: 'O' listed twice"):
        tag_names(train, ["O", "O", "B-PER"])
    with pytest.raises(DataError, match=r"^v.jsonl: every word has the tag 'O'; a tagger needs at least 2 tags"):
        tag_names(sentences([["O"], ["O"]]), None)


def test_tag_ids_and_an_unseen_tag_at_its_line(tmp_path: Path) -> None:
    names = ["B-PER", "I-PER", "O"]
    assert tag_ids(sentences([["O", "B-PER"], ["I-PER"]]), names) == [[2, 0], [1]]
    with pytest.raises(DataError) as caught:
        tag_ids(sentences([["O"], ["O", "B-LOC"]]), names)
    assert str(caught.value) == (
        "v.jsonl:2: tag 'B-LOC' was not seen in training (known: B-PER, I-PER, O); "
        "fix the tag of word 2 ('w1') or add sentences with it to the training data"
    )
    conll = read_tagged(str(write(tmp_path / "v.conll", CONLL2003)))  # column files: the word's own line
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}/v.conll:5: tag 'B-MISC' was not seen in training"):
        tag_ids(conll, ["B-ORG", "O", "B-PER", "I-PER"])
    with pytest.raises(DataError, match=r"^v.jsonl:1: tag 'X' is not in data.labels \(O\); fix the tag of word 1 \('w0'\)$"):
        tag_ids(sentences([["X"]]), ["O"], configured="data.labels")


# --------------------------------------------------------------------------- raw text to words

TEXTS = ["Hello, world!", "  two  spaces\tand\ttabs\n", "naïve café — ok", "", "   ", "a\u00a0b\u2028c\x1fd", "日本語 テキスト"]


def tokenizer_with(pre_tokenizer):
    """A fast tokenizer whose only part that matters here is its pre-tokenizer (no hub download)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


def bert_words():
    from tokenizers import pre_tokenizers

    return tokenizer_with(pre_tokenizers.BertPreTokenizer())


def byte_level_words():
    from tokenizers import pre_tokenizers

    return tokenizer_with(pre_tokenizers.ByteLevel(add_prefix_space=False))


@pytest.mark.parametrize("text", TEXTS)
def test_whitespace_words_are_str_split_with_offsets(text: str) -> None:
    words = split_words(text, "whitespace")
    assert [word for word, _, _ in words] == text.split()
    assert all(text[start:end] == word for word, start, end in words)


@pytest.mark.parametrize("text", TEXTS)
def test_pretokenizer_words_are_substrings_of_the_text(text: str) -> None:
    from tokenizers import pre_tokenizers

    bert = split_words(text, "pretokenizer", bert_words())
    expected = [piece for piece, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)]
    assert [word for word, _, _ in bert] == expected
    for words in (bert, split_words(text, "pretokenizer", byte_level_words())):
        assert all(text[start:end] == word and word == word.strip() and word for word, start, end in words)


def test_byte_level_pretokenizer_words_drop_the_space_marker() -> None:
    assert split_words("Hello  world, naïve", "pretokenizer", byte_level_words()) == [
        ("Hello", 0, 5), ("world", 7, 12), (",", 12, 13), ("naïve", 14, 19),
    ]  # fmt: skip


def test_pretokenizer_rule_needs_a_pre_tokenizer() -> None:
    tokenizer = tokenizer_with(None)
    with pytest.raises(ConfigError, match="no pre-tokenizer"):
        split_words("a b", "pretokenizer", tokenizer)


# --------------------------------------------------------------------------- any input: sentences or one DataError line

LINE_PIECES = [
    "", "# sent_id = 1", "#hashtag O", "-DOCSTART- -X- O", "1\tFrom\tO", "2\tthe\tB-ORG\t-\tx", "1-2\tdon't\t_", "a O", "a",
    "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_", "2.1\tx\tx\tX\tX\t_\t_\t_\t_\t_", "\t\t", " \u2028 ", "\x1c", "\ufeffa O",
    '{"tokens": ["a", "b"], "tags": ["O", "B"]}', '{"tokens": ["a"], "tags": [1]}', '{"tokens": [], "tags": []}', "[1]", "{",
]  # fmt: skip


def test_any_input_reads_to_sentences_or_one_data_error_line(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    lines = st.lists(st.one_of(st.sampled_from(LINE_PIECES), st.text(max_size=12)), max_size=12)
    data = st.one_of(lines.map("\n".join).map(str.encode), st.binary(max_size=40))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=data, suffix=st.sampled_from([".jsonl", ".conll", ".iob2", ".conllu"]), require_tags=st.booleans())
    def check(data: bytes, suffix: str, require_tags: bool) -> None:
        path = write(tmp_path / f"in{suffix}", data)
        try:
            read = read_tagged(str(path), require_tags=require_tags)
        except DataError as exc:
            assert len(str(exc).splitlines()) == 1 and str(exc).startswith(str(path)), str(exc)
            return
        assert len(read.words) == len(read.lines) > 0 and all(read.words) and all(all(w) for w in read.words)
        assert read.tags is None or [len(t) for t in read.tags] == [len(w) for w in read.words]
        assert read.tags is not None or not require_tags

    check()
