"""Progress bars (tqdm) that keep quiet in logs, CI and when asked.

``progress(it, desc="train", unit="img")`` returns a tqdm bar showing
throughput (``unit/s``).  The bar is silent (iteration still works, and
``set_postfix``/``update``/``close`` are no-ops) when

* ``quiet=True`` is passed, or
* ``quiet`` is None and the environment variable ``NPAD_QUIET`` is ``1``/``true``/``yes``, or
* ``quiet`` is None and stdout or stderr is not a terminal (redirected to a
  file or pipe, as in CI and batch jobs), so logs are not flooded with ``\\r`` lines
  (Jupyter kernels count as terminals).

``NPAD_QUIET=0`` forces bars on even without a terminal.
When tqdm is not installed a minimal silent wrapper is used.

Long jobs in batch logs still show progress: where the bar is off only because
output is not a terminal (:func:`plain_log`), the training loop
(``npad.methods.base.train_loop``) prints a plain line per epoch with :func:`log_line`.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable

__all__ = ["progress", "is_quiet", "plain_log", "log_line"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def is_quiet(quiet: bool | None = None) -> bool:
    """Resolve the quiet flag: explicit ``quiet`` > ``$NPAD_QUIET`` > (stdout and stderr both terminals)."""
    if quiet is not None:
        return bool(quiet)
    env = os.environ.get("NPAD_QUIET", "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    if "ipykernel" in sys.modules:  # Jupyter: not a tty, but bars render as widgets
        return False
    return not (_isatty(sys.stdout) and _isatty(sys.stderr))


def plain_log(quiet: bool | None = None) -> bool:
    """True when the bar is off only because output is not a terminal (``quiet`` and ``$NPAD_QUIET``
    unset): the place for plain log lines. ``quiet=True`` or ``NPAD_QUIET=1`` silence them too."""
    if quiet is not None or os.environ.get("NPAD_QUIET", "").strip().lower() in _TRUE | _FALSE:
        return False
    return is_quiet(None)


def log_line(text: str) -> None:
    """Print one progress line to stderr (where the bars go), flushed so batch logs show it at once."""
    print(text, file=sys.stderr, flush=True)


class _SilentBar:
    """Stand-in for tqdm when it is missing: iterates, counts, prints nothing."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, **_: Any):
        self.iterable = iterable
        self.total = total
        self.n = 0

    def __iter__(self):
        for x in self.iterable if self.iterable is not None else ():
            self.n += 1
            yield x

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=sys.stderr)

    def close(self) -> None:
        pass


def progress(
    iterable: Iterable | None = None,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
    quiet: bool | None = None,
    **kwargs: Any,
):
    """Wrap ``iterable`` in a tqdm bar with throughput (``unit/s``), silent per :func:`is_quiet`.

    ``total`` defaults to ``len(iterable)`` when defined.  Extra keyword
    arguments go to ``tqdm`` (e.g. ``leave=False``, ``unit_scale=True``).
    """
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    disable = is_quiet(quiet)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _SilentBar(iterable, total=total)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("smoothing", 0.1)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr, **kwargs)
