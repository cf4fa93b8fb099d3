"""One parallel map for every command that works item by item (simulate files, convert inputs, prepare shards).

`parallel_map(fn, items)` calls `fn(*item)` for each item in this process (workers = 1), in `workers` local
processes (spawned, so that Numba and PYTHIA start clean), or on a Dask cluster (`scheduler` = its address, the
`dask` extra), and yields `(index, result)` as items finish. A failing item does not stop the others: its result is
a `Failed` with the error's message, and the caller reports it beside the items that succeeded. `fn` must be a
top-level function (it is pickled for the workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

from .errors import ConvertError, Fm4nppError


@dataclass(frozen=True)
class Failed:
    """An item that failed: the message of its error (a user-facing error, or an unexpected one named as such)."""

    message: str
    expected: bool = True


def call(fn: Callable, args: tuple):
    """fn(*args), with a failure returned as `Failed` instead of raised."""
    try:
        return fn(*args)
    except Fm4nppError as exc:
        return Failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken item must not lose the results of the others
        return Failed(f"unexpected error ({type(exc).__name__}: {exc})", expected=False)


def parallel_map(
    fn: Callable, items: Sequence[tuple], workers: int = 1, scheduler: str | None = None
) -> Iterator[tuple[int, object]]:
    """(index, fn(*items[index]) or Failed) for every item, in the order they finish."""
    if workers < 1:
        raise ConvertError(f"--workers must be at least 1, not {workers}")
    if scheduler:
        yield from _dask_map(fn, items, scheduler)
    elif workers == 1 or len(items) <= 1:
        for index, args in enumerate(items):
            yield index, call(fn, args)
    else:
        pool = ProcessPoolExecutor(min(workers, len(items)), mp_context=get_context("spawn"))
        try:
            futures = {pool.submit(call, fn, args): index for index, args in enumerate(items)}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except BrokenProcessPool as exc:
                    raise ConvertError(
                        f"a worker process died ({exc}); it may have run out of memory: try fewer --workers"
                    ) from exc
        finally:  # also when the caller stops early: queued items are not started
            pool.shutdown(wait=True, cancel_futures=True)


def _dask_map(fn: Callable, items: Sequence[tuple], scheduler: str) -> Iterator[tuple[int, object]]:
    from .errors import require

    distributed = require("distributed", "dask", "--scheduler")
    try:
        client = distributed.Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConvertError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
    try:
        futures = [client.submit(call, fn, args, pure=False) for args in items]
        index = {future.key: i for i, future in enumerate(futures)}
        for future in distributed.as_completed(futures):
            yield index[future.key], future.result()
    finally:
        client.close()
