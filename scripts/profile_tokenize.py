"""Where the raw Rust encoder's time goes, for a byte-level BPE tokenizer: the bound under `seqlm tokenize`.

    .venv/bin/python scripts/profile_tokenize.py [--tokenizer runs/bench/gpt-data/tokenizer.json] [--corpus data/corpus/train.txt]

`seqlm tokenize` hands batches of lines to `tokenizers`' `encode_batch_fast` (Rust, every core) while Python
reads the next batch and writes the previous one, so its rate is the encoder's own. This times that encoder
(best of `--repeats`, batches of 1,000 lines held in memory) three ways on the same lines:

- the tokenizer as trained (pre-tokenizer, BPE merges, the Encoding objects handed back);
- the same pre-tokenizer with no merges (every byte a token): more tokens, no merging;
- the same pre-tokenizer with a one-word WordLevel model (no merges, one token per pre-token).

Fitting time = a + b · tokens to the last two gives the per-token cost (building the ids and Encoding objects)
and what is left for the pre-tokenizer (regex split and byte mapping); the first minus the third (less its
extra tokens' cost) is the BPE merges. Prints each part's share of the full encoder's time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[1]


def encode_seconds(tokenizer: Tokenizer, lines: list[str], repeats: int) -> tuple[float, int]:
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(lines), 1000):
            tokens += sum(len(e.ids) for e in tokenizer.encode_batch_fast(lines[start : start + 1000], add_special_tokens=False))
        best = min(best, time.perf_counter() - started)
    return best, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=REPO / "runs/bench/gpt-data/tokenizer.json")
    parser.add_argument("--corpus", type=Path, default=REPO / "data/corpus/train.txt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    spec = json.loads(args.tokenizer.read_text(encoding="utf-8"))
    if spec["model"]["type"] != "BPE":
        parser.error(f"{args.tokenizer}: a BPE tokenizer is profiled here, not {spec['model']['type']}")
    lines = [line for line in args.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6

    no_merges = json.loads(json.dumps(spec))
    no_merges["model"]["merges"] = []
    no_merges["model"]["vocab"] = {piece: i for piece, i in spec["model"]["vocab"].items() if len(piece) == 1}
    word_level = json.loads(json.dumps(spec))
    word_level["model"] = {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}

    full_s, full_tokens = encode_seconds(Tokenizer.from_str(json.dumps(spec)), lines, args.repeats)
    bytes_s, bytes_tokens = encode_seconds(Tokenizer.from_str(json.dumps(no_merges)), lines, args.repeats)
    words_s, words_tokens = encode_seconds(Tokenizer.from_str(json.dumps(word_level)), lines, args.repeats)

    per_token = (bytes_s - words_s) / (bytes_tokens - words_tokens)
    pre_tokenize = words_s - per_token * words_tokens
    tokens_part = per_token * full_tokens
    merges = full_s - pre_tokenize - tokens_part
    print(f"{len(lines):,} lines, {megabytes:.2f} MB, {os.cpu_count()} CPUs; tokenizer {args.tokenizer}")
    print(f"full encoder:        {full_s:.3f} s = {megabytes / full_s:.2f} MB/s, {full_tokens:,} tokens")
    print(f"no merges (bytes):   {bytes_s:.3f} s, {bytes_tokens:,} tokens")
    print(f"word level:          {words_s:.3f} s, {words_tokens:,} tokens")
    print(f"per token: {per_token * 1e9:.0f} ns (ids and Encoding objects)")
    for name, seconds in (
        ("pre-tokenizer (regex split, byte mapping)", pre_tokenize),
        ("BPE merges", merges),
        ("per-token output", tokens_part),
    ):
        print(f"  {name:<42} {seconds:.3f} s  {100 * seconds / full_s:5.1f}%")


if __name__ == "__main__":
    main()
