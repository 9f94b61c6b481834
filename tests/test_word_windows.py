"""Words to windows of sub-word pieces and back: labels where transformers' word_ids put them, no word lost."""

from __future__ import annotations

import string

import numpy as np
import pytest

from seqlm.data.word_windows import IGNORE, WordWindows, encode_words, needs_leading_space, word_predictions
from seqlm.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello world, hello tagging!", "Words split into pieces here."] * 5


def wordpiece(**wrapper: object):
    """A BERT-style tokenizer over a tiny vocabulary: whole words, letters and ##letters (no hub download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["the", "cat", "sat", "on", "mat", "un", "##believ", "##able", "new", "york"]
    letters = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase] + list(".,!?[]")
    vocab = {token: i for i, token in enumerate(SPECIALS + words + letters)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    roles = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles, **wrapper)


def byte_level(add_prefix_space: bool = False):
    """A GPT-2/RoBERTa-style byte-level BPE tokenizer trained in memory, `<s> $A </s>` around a sequence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Unbelievable", "!"],
    ["New", "York", "jumps", "over", "lazy", "foxes"],
    ["Hello", "world", ",", "hello", "tagging", "!"],
]


def tags_for(sentences: list[list[str]], n_tags: int = 5) -> list[list[int]]:
    return [[(7 * i + j) % n_tags for j in range(len(words))] for i, words in enumerate(sentences)]


def run_ner_labels(tokenizer, words: list[list[str]], tags: list[list[int]], label_all: bool = False) -> list[list[int]]:
    """transformers' examples/pytorch/token-classification/run_ner.py alignment, from word_ids()."""
    encoded = tokenizer(words, is_split_into_words=True)
    labels = []
    for i, sentence_tags in enumerate(tags):
        previous, row = None, []
        for word in encoded.word_ids(i):
            if word is None:
                row.append(IGNORE)
            elif word != previous or label_all:
                row.append(sentence_tags[word])
            else:
                row.append(IGNORE)
            previous = word
        labels.append(row)
    return labels


def every_word_once(windows: WordWindows, sentences: list[list[str]]) -> None:
    """Across its windows, each word of each sentence has exactly one first piece, in order."""
    for s, words in enumerate(sentences):
        seen = [windows.word_index[w][windows.first_piece[w]] for w in np.flatnonzero(windows.sentence == s)]
        assert np.array_equal(np.concatenate(seen), np.arange(len(words))), (s, seen)


# --------------------------------------------------------------------------- sentences that fit


@pytest.mark.parametrize("label_all", [False, True], ids=["first-piece", "all-pieces"])
def test_labels_match_transformers_word_ids_alignment_wordpiece(label_all: bool) -> None:
    tokenizer = wordpiece()
    tags = tags_for(SENTENCES)
    windows = encode_words(tokenizer, SENTENCES, 64, tags, label_all_pieces=label_all)
    reference = tokenizer(SENTENCES, is_split_into_words=True)
    assert [ids.tolist() for ids in windows.input_ids] == reference["input_ids"]
    assert [labels.tolist() for labels in windows.labels] == run_ner_labels(tokenizer, SENTENCES, tags, label_all)
    assert windows.sentence.tolist() == [0, 1, 2, 3] and windows.n_split_sentences == windows.n_cut_words == 0
    assert windows.lengths.tolist() == [len(ids) for ids in reference["input_ids"]]
    for i, ids in enumerate(windows.input_ids):
        words = [-1 if word is None else word for word in reference.word_ids(i)]
        assert windows.word_index[i].tolist() == words
        assert windows.attention_mask[i].tolist() == [1] * len(ids)
    every_word_once(windows, SENTENCES)


def test_byte_level_words_get_a_leading_space_like_add_prefix_space() -> None:
    """The same ids and labels as the tokenizer built with add_prefix_space=True (what run_ner asks of RoBERTa)."""
    tokenizer, reference = byte_level(), byte_level(add_prefix_space=True)
    assert needs_leading_space(tokenizer) and not needs_leading_space(reference)
    tags = tags_for(SENTENCES)
    windows = encode_words(tokenizer, SENTENCES, 64, tags)
    expected = reference(SENTENCES, is_split_into_words=True)
    assert [ids.tolist() for ids in windows.input_ids] == expected["input_ids"]
    assert [labels.tolist() for labels in windows.labels] == run_ner_labels(reference, SENTENCES, tags)
    assert windows.input_ids[0][0] == tokenizer.bos_token_id and windows.input_ids[0][-1] == tokenizer.eos_token_id
    # A mid-sentence word is tokenized as in running text, after its space ('Ġworld').
    running = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    world = windows.input_ids[3][(windows.word_index[3] == 1)]
    assert world.tolist() == running[-len(world) :]


def test_token_type_ids_follow_the_template_when_the_model_takes_them() -> None:
    plain = encode_words(wordpiece(), SENTENCES, 64)
    assert plain.token_type_ids is None and plain.labels is None
    typed = encode_words(wordpiece(model_input_names=["input_ids", "token_type_ids", "attention_mask"]), SENTENCES, 64)
    assert [types.tolist() for types in typed.token_type_ids] == [[0] * len(ids) for ids in typed.input_ids]


def test_special_token_strings_in_the_data_are_text() -> None:
    tokenizer = wordpiece()
    windows = encode_words(tokenizer, [["[SEP]", "cat"]], 16, [[1, 2]])
    pieces = tokenizer.convert_ids_to_tokens(windows.input_ids[0].tolist())
    assert pieces == ["[CLS]", "[", "s", "##e", "##p", "]", "cat", "[SEP]"]
    assert windows.labels[0].tolist() == [IGNORE, 1, IGNORE, IGNORE, IGNORE, IGNORE, 2, IGNORE]


def test_a_word_without_pieces_gets_the_unk_token() -> None:
    """BertNormalizer removes a zero-width space and control characters: the word still gets a piece and a label."""
    tokenizer = wordpiece()
    sentences = [["the", "\u200b", "cat", "\x00"]]
    windows = encode_words(tokenizer, sentences, 16, [[1, 2, 3, 4]])
    assert tokenizer.convert_ids_to_tokens(windows.input_ids[0].tolist()) == ["[CLS]", "the", "[UNK]", "cat", "[UNK]", "[SEP]"]
    assert windows.labels[0].tolist() == [IGNORE, 1, 2, 3, 4, IGNORE] and windows.n_empty_words == 2
    every_word_once(windows, sentences)


# --------------------------------------------------------------------------- windows


def test_a_long_sentence_splits_at_word_boundaries_and_labels_every_word_once() -> None:
    tokenizer = wordpiece()
    long = ["the", "cat", "unbelievable", "sat", "on", "the", "mat", "unbelievable", "new", "york", "cat", "sat"]
    sentences = [["the", "cat"], long, ["mat"]]
    tags = tags_for(sentences)
    windows = encode_words(tokenizer, sentences, 8, tags)  # 6 pieces per window between [CLS] and [SEP]
    assert windows.n_split_sentences == 1 and windows.n_cut_words == 0
    assert windows.sentence.tolist() == [0, 1, 1, 1, 2]
    for ids, length in zip(windows.input_ids, windows.lengths):
        assert len(ids) == length <= 8 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    every_word_once(windows, sentences)
    # Greedy: each window holds as many whole words as fit; the next word would not have fitted.
    pieces = [len(tokenizer(word, add_special_tokens=False)["input_ids"]) for word in long]
    assert pieces[2] == 3
    held = [sorted(set(windows.word_index[w][1:-1].tolist())) for w in np.flatnonzero(windows.sentence == 1)]
    assert sum(held, []) == list(range(len(long)))
    for words, following in zip(held, held[1:]):
        assert sum(pieces[j] for j in words) <= 6 < sum(pieces[j] for j in words) + pieces[following[0]]
    # Every word's first piece carries its tag, exactly once across the windows.
    read = word_predictions(windows, windows.labels, [len(words) for words in sentences])
    assert [values.tolist() for values in read] == tags


def test_a_word_longer_than_a_window_keeps_its_first_pieces() -> None:
    tokenizer = wordpiece()
    sentences = [["the", "supercalifragilistic", "cat"]]  # the long word is 20 letter pieces
    windows = encode_words(tokenizer, sentences, 8, [[1, 2, 3]])
    assert windows.n_cut_words == 1 and windows.n_split_sentences == 1 and len(windows.input_ids) == 3
    cut = tokenizer.convert_ids_to_tokens(windows.input_ids[1].tolist())
    assert cut == ["[CLS]", "s", "##u", "##p", "##e", "##r", "##c", "[SEP]"]
    assert windows.labels[1].tolist() == [IGNORE, 2] + [IGNORE] * 6
    every_word_once(windows, sentences)
    assert [values.tolist() for values in word_predictions(windows, windows.labels, [3])] == [[1, 2, 3]]


def test_label_all_pieces_labels_every_piece_of_a_word() -> None:
    windows = encode_words(wordpiece(), [["unbelievable", "cat"]], 16, [[4, 2]], label_all_pieces=True)
    assert windows.labels[0].tolist() == [IGNORE, 4, 4, 4, 2, IGNORE]
    assert windows.first_piece[0].tolist() == [False, True, False, False, True, False]


def test_max_length_must_leave_room_for_a_piece() -> None:
    with pytest.raises(ConfigError, match="max_length 2 leaves no room"):
        encode_words(wordpiece(), SENTENCES, 2)


def test_no_sentences_and_empty_sentences() -> None:
    tokenizer = wordpiece()
    nothing = encode_words(tokenizer, [], 16, [])
    assert nothing.input_ids == [] and nothing.sentence.tolist() == [] and word_predictions(nothing, [], []) == []
    windows = encode_words(tokenizer, [[], ["cat"]], 16, [[], [3]])
    assert [ids.tolist() for ids in windows.input_ids] == [[2, 3], [2, 6, 3]]
    assert [values.tolist() for values in word_predictions(windows, windows.labels, [0, 1])] == [[], [3]]


# --------------------------------------------------------------------------- predictions back to words


@pytest.mark.parametrize("make", [wordpiece, byte_level], ids=["wordpiece", "byte-level"])
def test_word_predictions_round_trip_ids_and_score_rows(make) -> None:
    tokenizer = make()
    sentences = SENTENCES + [["unbelievable"] * 9, ["supercalifragilistic", "the", "cat"]]
    tags = tags_for(sentences)
    windows = encode_words(tokenizer, sentences, 7, tags)
    assert windows.n_split_sentences >= 2
    n_words = [len(words) for words in sentences]
    # A model that predicts each piece's label perfectly, padded past each window's end.
    padded = [np.concatenate([labels, np.full(3, 99)]) for labels in windows.labels]
    assert [values.tolist() for values in word_predictions(windows, padded, n_words)] == tags
    # Rows of scores (one-hot of the tag) come back as one row per word.
    rows = [np.eye(5)[np.where(labels == IGNORE, 0, labels)] for labels in windows.labels]
    back = word_predictions(windows, rows, n_words)
    assert [row.shape for row in back] == [(n, 5) for n in n_words]
    assert [row.argmax(axis=1).tolist() for row in back] == tags


def test_word_predictions_checks_its_inputs() -> None:
    windows = encode_words(wordpiece(), SENTENCES, 64)
    with pytest.raises(ValueError, match="arrays of piece values"):
        word_predictions(windows, windows.input_ids[:-1], [len(words) for words in SENTENCES])
    with pytest.raises(ValueError, match="do not match n_words"):
        word_predictions(windows, windows.input_ids, [1, 1, 1, 1])


def test_a_training_set_sized_input_encodes_in_one_pass() -> None:
    """~1,700 sentences / 21k words, as the POS training set (time printed, not asserted)."""
    import time

    rng = np.random.default_rng(0)
    letters = np.array(list(string.ascii_lowercase))
    sentences = [["".join(rng.choice(letters, rng.integers(1, 9))) for _ in range(rng.integers(1, 25))] for _ in range(1700)]
    tags = tags_for(sentences, 17)
    began = time.perf_counter()
    windows = encode_words(wordpiece(), sentences, 48, tags)
    print(f"encoded {sum(map(len, sentences))} words in {time.perf_counter() - began:.3f}s")
    every_word_once(windows, sentences)
    assert [values.tolist() for values in word_predictions(windows, windows.labels, [len(s) for s in sentences])] == tags


def test_any_words_and_window_size_keep_every_word_once() -> None:
    """Random words (control and zero-width characters included) and window sizes: no word lost or doubled."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tokenizers = {"wordpiece": wordpiece(), "byte-level": byte_level()}
    pieces = st.sampled_from(list("abcxyz.!é\u200b\x00 ") + ["supercalifragilistic", "[SEP]", "<s>"])
    words = st.lists(pieces, min_size=1, max_size=4).map("".join)
    sentences = st.lists(st.lists(words, max_size=12), max_size=6)

    @settings(max_examples=120, deadline=None)
    @given(sentences=sentences, max_length=st.integers(3, 12), kind=st.sampled_from(sorted(tokenizers)), label_all=st.booleans())
    def check(sentences: list[list[str]], max_length: int, kind: str, label_all: bool) -> None:
        tags = tags_for(sentences)
        windows = encode_words(tokenizers[kind], sentences, max_length, tags, label_all_pieces=label_all)
        assert all(len(ids) == length <= max_length for ids, length in zip(windows.input_ids, windows.lengths))
        every_word_once(windows, sentences)
        back = word_predictions(windows, windows.labels, [len(words) for words in sentences])
        assert [values.tolist() for values in back] == tags

    check()


def test_the_tokenizer_is_left_as_it_was() -> None:
    tokenizer = byte_level()
    before = (tokenizer.backend_tokenizer.to_str(), tokenizer.backend_tokenizer.encode_special_tokens)
    encode_words(tokenizer, SENTENCES, 8)
    assert (tokenizer.backend_tokenizer.to_str(), tokenizer.backend_tokenizer.encode_special_tokens) == before
    assert tokenizer("<s>", add_special_tokens=False)["input_ids"] == [tokenizer.bos_token_id]
