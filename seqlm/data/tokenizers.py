"""Train a tokenizer (byte-level BPE or BERT WordPiece) with `tokenizers`, or load one.

Contract:

- `build_tokenizer(config, documents)` returns a `TokenizerBundle`: a
  `transformers.PreTrainedTokenizerFast`, its kind ("bpe", "wordpiece" or "pretrained")
  and the document separator (token and id) that `seqlm tokenize` appends to every document.
- bpe: GPT-2 style byte-level BPE (no unknown tokens, exact round trip); special tokens
  default to `<|endoftext|>` (bos = eos = unk, and the separator) and `<|pad|>`.
- wordpiece: BERT style (BertNormalizer, BertPreTokenizer, `##` continuation, template
  `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1`); special tokens default to `[PAD] [UNK]
  [CLS] [SEP] [MASK]`; the separator is `[SEP]`.
- `tokenizer.special_tokens` adds to and reorders these: the tokens a kind needs are
  appended when the list leaves them out, so the roles above always exist.
- Training streams the documents: `documents(purpose)` returns a fresh iterable of
  document batches (lists of strings) for each pass; bpe reads them once, wordpiece twice
  (first only to collect the characters, see `_continuation_tokens`), so that training is
  deterministic: the same documents and config give the same tokenizer.json.
- pretrained: `AutoTokenizer.from_pretrained(dir or hub id)`; the separator is its eos
  token, else its sep token; a tokenizer with neither, or without a fast (Rust) backend, is
  a `ConfigError`. One that cannot be found or loaded is a `DataError`.
- The wrapped tokenizer saves with `save_pretrained(dir)` and loads back with
  `AutoTokenizer.from_pretrained(dir)` as the same pipeline (tokenizer.json is used as is).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlm.config.schema import TokenizerConfig
from seqlm.errors import ConfigError, DataError, first_line

BPE_EOS = "<|endoftext|>"
BPE_PAD = "<|pad|>"
WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")

# `documents(purpose)`: a fresh iterable of document batches per pass; `purpose` says what the
# pass is for (the caller may show it in its progress display).
DocumentPasses = Callable[[str], Iterable[list[str]]]


@dataclass(frozen=True)
class TokenizerBundle:
    """A ready tokenizer, its kind, and the separator appended after every document."""

    tokenizer: Any  # transformers.PreTrainedTokenizerFast (typed loosely: transformers loads lazily)
    kind: str
    separator_token: str
    separator_id: int


def default_special_tokens(kind: str) -> list[str]:
    """The special tokens a kind uses when `tokenizer.special_tokens` is not set."""
    return [BPE_EOS, BPE_PAD] if kind == "bpe" else list(WORDPIECE_SPECIALS.values())


def build_tokenizer(config: TokenizerConfig, documents: DocumentPasses | None = None) -> TokenizerBundle:
    """Load `config.pretrained`, or train `config.kind` on the batches `documents(purpose)` yields."""
    if config.pretrained:
        tokenizer = load_pretrained(config.pretrained)
        token, token_id = separator_of(tokenizer, config.pretrained)
        return TokenizerBundle(tokenizer, "pretrained", token, token_id)
    if documents is None:
        raise ValueError("training a tokenizer needs documents")
    tokenizer = train_tokenizer(config, documents)
    separator = BPE_EOS if config.kind == "bpe" else WORDPIECE_SPECIALS["sep"]
    return TokenizerBundle(tokenizer, config.kind, separator, tokenizer.convert_tokens_to_ids(separator))


def train_tokenizer(config: TokenizerConfig, documents: DocumentPasses) -> Any:
    """Train a bpe or wordpiece tokenizer on streamed documents, wrapped as a PreTrainedTokenizerFast."""
    specials = _special_tokens(config)
    if config.kind == "bpe":
        backend, trainer = _bpe(config, specials)
        # The trainer pulls the iterator from Rust: the corpus is streamed, never held in memory.
        backend.train_from_iterator(documents("counting words"), trainer=trainer)
    else:
        backend = _wordpiece_backend(config)
        continuations = _continuation_tokens(backend, documents("collecting characters"))
        trainer = _wordpiece_trainer(config, specials, continuations)
        backend.train_from_iterator(documents("counting words"), trainer=trainer)
        backend = _as_ordinary_tokens(backend, continuations)
        _add_bert_template(backend)
    return _wrap(backend, config.kind, specials)


def load_pretrained(name: str) -> Any:
    """`AutoTokenizer.from_pretrained(name)` for a local directory, a .gguf model file, a packaged model's
    alias (`smollm2`, see `seqlm.models.packaged`) or a hub id, as a fast tokenizer."""
    from transformers import AutoTokenizer

    from seqlm.models.gguf_files import gguf_source, is_gguf
    from seqlm.models.packaged import packaged_model_path

    local = packaged_model_path(name) or Path(name).expanduser()
    source, kwargs = (str(local) if local.is_dir() else name), {}
    if local.is_file():
        if not is_gguf(local):
            raise ConfigError(f"tokenizer.pretrained {name!r} is a file; give the directory that holds tokenizer.json (or a .gguf model file)")
        source, kwargs = gguf_source(local, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:
        first = first_line(exc)
        where = "local directory" if local.is_dir() else "local file" if local.is_file() else "local directory or hub id"
        raise DataError(f"tokenizer.pretrained {name!r}: cannot load a tokenizer from this {where} ({first})") from exc
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError(
            f"tokenizer.pretrained {name!r}: {type(tokenizer).__name__} has no fast (tokenizers) backend; "
            "use a tokenizer that ships tokenizer.json"
        )
    return tokenizer


def separator_of(tokenizer: Any, name: str = "the tokenizer") -> tuple[str, int]:
    """The document separator of a loaded tokenizer: its eos token, else its sep token."""
    for role in ("eos", "sep"):
        token = getattr(tokenizer, f"{role}_token", None)
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token is not None and token_id is not None:
            return str(token), int(token_id)
    raise ConfigError(
        f"tokenizer.pretrained {name!r} has neither an eos nor a sep token to separate documents; "
        "pick another tokenizer or train one (tokenizer.kind)"
    )


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the special-token roles the tokenizer has (pad, unk, bos, eos, cls, sep, mask)."""
    ids = {}
    for role in SPECIAL_ROLES:
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token_id is not None:
            ids[role] = int(token_id)
    return ids


def _special_tokens(config: TokenizerConfig) -> list[str]:
    """The configured special tokens (deduplicated), plus the ones this kind cannot do without."""
    chosen = list(dict.fromkeys(config.special_tokens or default_special_tokens(config.kind)))
    if any(not token for token in chosen):
        raise ConfigError("tokenizer.special_tokens: tokens must be non-empty strings")
    required = default_special_tokens(config.kind)
    return chosen + [token for token in required if token not in chosen]


def _bpe(config: TokenizerConfig, specials: list[str]) -> tuple[Any, Any]:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    backend = Tokenizer(models.BPE())
    if config.lowercase:
        backend.normalizer = normalizers.Lowercase()
    # No prefix space: the stored ids decode back to exactly the document text.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    _check_vocab_size(config, 256 + len(specials))
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=specials,
        # Every byte is in the vocabulary, so no text is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # seqlm shows its own progress; indicatif bars garble logs
    )
    return backend, trainer


def _wordpiece_backend(config: TokenizerConfig) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    backend = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk"], continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=config.lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _wordpiece_trainer(config: TokenizerConfig, specials: list[str], continuations: list[str]) -> Any:
    from tokenizers import trainers

    _check_vocab_size(config, len(specials) + len(continuations) + 1)
    return trainers.WordPieceTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        # Given as special tokens only so that they get ids before training (see _continuation_tokens).
        special_tokens=specials + continuations,
        continuing_subword_prefix="##",
        show_progress=False,
    )


def _continuation_tokens(backend: Any, batches: Iterable[list[str]]) -> list[str]:
    """`##c` for every normalized character that can continue a word, sorted.

    Works around tokenizers#1794 (open in tokenizers 0.23): the WordPiece trainer creates
    `##c` tokens while iterating a hash map, so their ids, and on count ties the merges,
    change from run to run. Registered up front they get fixed ids in sorted order. Whitespace,
    punctuation and CJK characters always stand alone after BertPreTokenizer, so they never
    continue a word and are left out.
    """
    characters: set[str] = set()
    for batch in batches:
        characters.update(*batch)  # C speed; normalizing each distinct character is cheap
    normalized: set[str] = set()
    for character in characters:
        normalized.update(backend.normalizer.normalize_str(character))
    return [f"##{c}" for c in sorted(normalized) if not (c.isspace() or _is_punctuation(c) or _is_cjk(c))]


def _as_ordinary_tokens(backend: Any, continuations: list[str]) -> Any:
    """The trained tokenizer with the `##c` tokens kept in the vocabulary but no longer special."""
    from tokenizers import Tokenizer

    data = json.loads(backend.to_str())
    dropped = set(continuations)
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] not in dropped]
    return Tokenizer.from_str(json.dumps(data))


def _is_punctuation(character: str) -> bool:
    """BERT's definition: ASCII symbols count as punctuation too."""
    code = ord(character)
    ascii_symbol = 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
    return ascii_symbol or unicodedata.category(character).startswith("P")


def _is_cjk(character: str) -> bool:
    """The CJK ideograph blocks that BertNormalizer surrounds with spaces."""
    code = ord(character)
    blocks = (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
    )  # fmt: skip
    return any(low <= code <= high for low, high in blocks)


def _add_bert_template(backend: Any) -> None:
    from tokenizers import processors

    cls, sep = WORDPIECE_SPECIALS["cls"], WORDPIECE_SPECIALS["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )


def _wrap(backend: Any, kind: str, specials: list[str]) -> Any:
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        roles = {"bos_token": BPE_EOS, "eos_token": BPE_EOS, "unk_token": BPE_EOS, "pad_token": BPE_PAD}
        # Byte-level BPE decodes exactly; the "cleanup" would delete spaces before punctuation.
        options: dict[str, Any] = {"clean_up_tokenization_spaces": False}
    else:
        roles = {f"{role}_token": token for role, token in WORDPIECE_SPECIALS.items()}
        # token_type_ids are part of BERT's inputs (next-sentence prediction needs them).
        options = {
            "clean_up_tokenization_spaces": True,
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        }
    extra = [token for token in specials if token not in roles.values()]
    if extra:
        options["extra_special_tokens"] = extra
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles, **options)


def _check_vocab_size(config: TokenizerConfig, minimum: int) -> None:
    if config.vocab_size < minimum:
        raise ConfigError(
            f"tokenizer.vocab_size ({config.vocab_size}) is below the {minimum} tokens {config.kind} starts with"
        )
