"""`causal_windows`: how `seqlm evaluate` cuts a token stream into causal-LM windows.

A window (begin, end, n_context) feeds tokens[begin:end] and scores positions
[begin + n_context, end): each scored token is predicted from the tokens before it inside
the window. Documented contract (evaluate_run's module docstring):

- stride < seq_len: every position 1..n-1 is scored exactly once (position 0 never has
  context), each scored token with at least seq_len - stride tokens of context once the
  first window is past;
- stride == seq_len: windows do not overlap and the first token of every window, having no
  context inside it, is not scored — the same tokens pretraining's validation scores.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from seqlm.tasks.causal_lm import causal_windows

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 101, 257]
SEQ_LENS = [2, 3, 4, 5, 8, 16, 33]


def strides(seq_len: int) -> list[int]:
    return sorted({1, 2, seq_len // 2 or 1, seq_len - 1 or 1, seq_len} & set(range(1, seq_len + 1)))


def scored_positions(windows: list[tuple[int, int, int]]) -> Counter[int]:
    return Counter(p for begin, end, n_context in windows for p in range(begin + n_context, end))


def check_shape(n: int, seq_len: int, stride: int, windows: list[tuple[int, int, int]]) -> None:
    for begin, end, n_context in windows:
        assert 0 <= begin < end <= n
        assert end - begin <= seq_len, "no window is longer than seq_len"
        assert n_context >= 1, "the first token of a window is never scored: it has no context"
        assert begin + n_context < end, "every window scores at least one token"
        assert begin % stride == 0, "windows start every stride tokens"
    begins = [begin for begin, _, _ in windows]
    assert begins == sorted(set(begins))
    # Scoring moves forward: each window's scored tokens come after the previous window's.
    for (_, end0, _), (begin1, _, ctx1) in itertools.pairwise(windows):
        assert begin1 + ctx1 >= end0


@pytest.mark.parametrize("seq_len", SEQ_LENS)
def test_windows(seq_len: int) -> None:
    for n, stride in itertools.product(SIZES, strides(seq_len)):
        try:
            check_windows(n, seq_len, stride)
        except AssertionError as exc:
            raise AssertionError(f"causal_windows({n}, {seq_len}, {stride}): {exc}") from exc


def check_windows(n: int, seq_len: int, stride: int) -> None:
    windows = causal_windows(n, seq_len, stride)
    check_shape(n, seq_len, stride, windows)
    scored = scored_positions(windows)
    assert all(count == 1 for count in scored.values()), "no token is scored twice"
    assert 0 not in scored
    if stride < seq_len:
        assert set(scored) == set(range(1, n)), "every token but the first is scored exactly once"
        for _, _, n_context in windows[1:]:
            # Later windows give each scored token at least seq_len - stride tokens of context.
            assert n_context >= seq_len - stride
    else:
        # Non-overlapping windows of seq_len: tokens at multiples of seq_len have no context.
        for (_, end0, _), (begin1, _, _) in itertools.pairwise(windows):
            assert begin1 >= end0, "windows do not overlap"
        assert all(n_context == 1 for _, _, n_context in windows)
        expected = {p for p in range(1, n) if p % seq_len != 0}
        assert set(scored) == expected


def test_examples() -> None:
    assert causal_windows(0, 4, 4) == []
    assert causal_windows(1, 4, 4) == []
    assert causal_windows(2, 4, 4) == [(0, 2, 1)]
    assert causal_windows(10, 4, 4) == [(0, 4, 1), (4, 8, 1), (8, 10, 1)]
    assert causal_windows(10, 4, 2) == [(0, 4, 1), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert causal_windows(10, 4, 1) == [(0, 4, 1)] + [(b, b + 4, 3) for b in range(1, 7)]
    # The last window stops at the end of the stream.
    assert causal_windows(9, 4, 3) == [(0, 4, 1), (3, 7, 1), (6, 9, 1)]


def test_stride_equal_seq_len_matches_pretraining_validation_blocks() -> None:
    """Same tokens as BlockSampler.sequential blocks of seq_len with the shift inside each block."""
    n, seq_len = 1000, 32
    windows = causal_windows(n, seq_len, seq_len)
    full = [w for w in windows if w[1] - w[0] == seq_len]
    assert [(b, e) for b, e, _ in full] == [(i * seq_len, (i + 1) * seq_len) for i in range(n // seq_len)]
    assert sum(e - b - c for b, e, c in full) == (n // seq_len) * (seq_len - 1)
