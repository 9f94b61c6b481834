"""Several inference batches at once on a CPU, each on its share of the cores (`generation.streams`).

Why: one decoding step of a small model is a few dozen small operations (a 32-row batch against a 256-wide
layer), too small to split well across cores: with two intra-op threads each operation pays a fork/join and
the Python between operations runs on one core while the other waits. Two batches decoded at once, each on
one core, keep both cores busy (PyTorch releases the GIL inside every operation), as multi-instance
inference does, without a second process or a second copy of the weights.

Contract of `run_batches(work, batches, streams)`: yields `(batch, work(batch))` for every batch, each
`work` call made exactly once; with `streams` > 1 the calls run in that many threads and results come in
completion order (callers put them back in input order by the batch's indices), and
`torch.set_num_threads` is lowered to the stream's share for the duration, then restored. `work` must not
depend on the global RNG (the order of calls is not fixed) and must enter its own thread-local contexts
(`torch.inference_mode`, autocast) itself, or be wrapped in `in_callers_contexts`, which enters the calling
thread's gradient mode and CPU autocast. `resolve_streams` turns the setting into a count; inside a stream
it is one (the stream's share is one thread), so streams never nest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal, TypeVar

import torch

Batch = TypeVar("Batch")
Result = TypeVar("Result")


def resolve_streams(setting: int | Literal["auto"], device: torch.device, batches: int) -> int:
    """How many batches to run at once: on an accelerator one (its kernels queue asynchronously already); on
    a CPU `auto` is two (measured on a 2-core CPU, see the README's performance section), never more than
    there are batches or intra-op threads."""
    if device.type != "cpu":
        return 1
    threads = torch.get_num_threads()
    wanted = 2 if setting == "auto" else setting
    return max(1, min(wanted, threads, batches))


def in_callers_contexts(work: Callable[[Batch], Result]) -> Callable[[Batch], Result]:
    """`work` run under the gradient mode and CPU autocast of the thread that wraps it (both are thread-local)."""
    grad = torch.is_grad_enabled()
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu")

    def wrapped(batch: Batch) -> Result:
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=dtype, enabled=autocast):
            return work(batch)

    return wrapped


def run_batches(work: Callable[[Batch], Result], batches: Iterable[Batch], streams: int) -> Iterator[tuple[Batch, Result]]:
    """Every batch with its result (see the module docstring)."""
    if streams <= 1:
        for batch in batches:
            yield batch, work(batch)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // streams))
    try:
        with ThreadPoolExecutor(max_workers=streams, thread_name_prefix="seqlm-batch") as pool:
            pending: dict[Future, Batch] = {}
            queue = iter(batches)
            for batch in queue:  # at most `streams` in flight: batches may be produced lazily
                pending[pool.submit(work, batch)] = batch
                if len(pending) == streams:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = pending.pop(future)
                    yield batch, future.result()
                    following = next(queue, None)
                    if following is not None:
                        pending[pool.submit(work, following)] = following
    finally:
        torch.set_num_threads(threads)
