"""Progress of a long computation: a tqdm bar, a caller's callback, or nothing."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["check_progress", "progress_bar"]


def check_progress(progress) -> None:
    """``progress`` must be True (a bar), False or None (silent), or a callable ``progress(done, total)``."""
    if progress is not True and progress is not False and progress is not None and not callable(progress):
        raise ValueError(f"progress must be True, False or a callable progress(done, total), got {progress!r}")


@contextmanager
def progress_bar(progress, total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``: a tqdm bar for ``progress=True``, the callback for a callable, nothing for False."""
    check_progress(progress)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)
        try:
            yield bar.update
        finally:
            bar.close()
        return
    done = [0]

    def advance(k: int) -> None:
        done[0] += k
        if callable(progress):
            progress(done[0], total)

    yield advance
