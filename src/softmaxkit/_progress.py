"""Progress output that behaves in a terminal, in a log file and in a notebook.

:func:`progress` picks one of three displays from where the output goes:

=============================================  ===================================================
where                                          display
=============================================  ===================================================
a terminal (the stream is a TTY)               a tqdm bar, redrawn in place
a Jupyter kernel with ipywidgets               tqdm's notebook widget
anything else: a log file, a pipe, a notebook  plain lines, one every ``interval`` seconds (10 by
without ipywidgets                             default) and one at the end, nothing redrawn
=============================================  ===================================================

Every display ends at the work done: a fit that converges after 86 of ``max_iter=200`` iterations
ends at 86/86, not at "43% 86/200" with an estimate for work that never runs. The plain lines are
what a log keeps: tqdm writing to a file instead stores every frame with carriage returns (8,304
bytes for one 86-iteration fit), and in a notebook without ipywidgets ``tqdm.auto`` warns and
prints one output per frame.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["Progress", "progress"]

# Seconds between two plain lines: a fit of a minute writes about six, one of a second only the last.
PLAIN_INTERVAL_S = 10.0


class Progress:
    """The display's interface: :meth:`update` after each unit of work, :meth:`close` at the end (also on error)."""

    n = 0

    def update(self, n: int = 1, postfix: dict | None = None) -> None:
        """Count ``n`` more units done; ``postfix`` (name -> text) is shown beside the count."""

    def close(self, *, failed: bool = False) -> None:
        """End the display at the work done (``failed``: the work raised; no closing summary)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(failed=exc_type is not None)


class _TqdmProgress(Progress):
    def __init__(self, bar):
        self.bar = bar

    @property
    def n(self):
        return self.bar.n

    def update(self, n=1, postfix=None):
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self, *, failed=False):
        if not failed and self.bar.total is not None and self.bar.n < self.bar.total:
            self.bar.total = self.bar.n  # stopped early (converged): the bar ends full, at the work done
            self.bar.refresh()
        self.bar.close()


class PlainProgress(Progress):
    """Plain lines on ``stream``: at most one per ``interval`` seconds, and a last one on :meth:`close`.

    With ``summary=False`` the last line is written only after a periodic one (work that took under
    ``interval`` seconds writes nothing); a failed work writes none. ``clock`` (seconds, monotonic)
    is for tests.

    >>> import io
    >>> stream, now = io.StringIO(), [0.0]
    >>> bar = PlainProgress(total=200, desc="fit", unit="iter", stream=stream, clock=lambda: now[0])
    >>> for i in range(86):
    ...     now[0] += 0.25
    ...     bar.update(1, {"loss": f"{1 / (i + 1):.3g}"})
    >>> bar.close()
    >>> print(stream.getvalue(), end="")
    fit: 40/200 iter, 10.0 s, 4.0 iter/s, loss=0.025
    fit: 80/200 iter, 20.0 s, 4.0 iter/s, loss=0.0125
    fit: done, 86 iter in 21.5 s, 4.0 iter/s, loss=0.0116
    """

    def __init__(
        self,
        *,
        total: int | None,
        desc: str,
        unit: str,
        stream,
        unit_scale: bool = False,
        summary: bool = True,
        interval: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.unit_scale, self.summary = unit_scale, summary
        self.interval, self.clock = interval, clock
        self.n, self.postfix, self.closed, self.lines = 0, {}, False, 0
        self.started = self.last = clock()

    def update(self, n=1, postfix=None):
        self.n += n
        if postfix:
            self.postfix = dict(postfix)
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            of = f"/{self._count(self.total)}" if self.total is not None else ""
            self._line(f"{self._count(self.n)}{of} {self.unit}, {now - self.started:.1f} s", now)

    def close(self, *, failed=False):
        if self.closed:
            return
        self.closed = True
        if failed or not (self.summary or self.lines):
            return
        now = self.clock()
        self._line(f"done, {self._count(self.n)} {self.unit} in {now - self.started:.1f} s", now)

    def _count(self, value: float) -> str:
        if self.unit_scale:
            from tqdm import tqdm

            return tqdm.format_sizeof(value)
        return f"{value:,}"

    def _line(self, text: str, now: float) -> None:
        elapsed = now - self.started
        rate = f", {self._count(round(self.n / elapsed, 1))} {self.unit}/s" if elapsed > 0 else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {text}{rate}{extra}", file=self.stream, flush=True)
        self.lines += 1


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress(
    *,
    total: int | None,
    desc: str,
    unit: str,
    stream=None,
    enabled: bool = True,
    unit_scale: bool = False,
    summary: bool = True,
) -> Progress:
    """A progress display for ``total`` units of work (``None``: not known), chosen by where it goes.

    Parameters
    ----------
    total : int or None
        The most units the work may take (``max_iter``, the rows of a file); the display ends
        at the units actually done.
    desc, unit : str
        What is in progress, and the name of its unit (``"iter"``, ``"epoch"``, ``"rows"``).
    stream : file, optional
        Where the output goes; default ``sys.stderr`` at the time of the call.
    enabled : bool, default True
        ``False``: a display that shows nothing (``verbose=0``, ``--quiet``).
    unit_scale : bool, default False
        Counts with SI prefixes (``1.2M rows``).
    summary : bool, default True
        In plain lines, whether work that took under :data:`PLAIN_INTERVAL_S` writes its last
        line (a fit's count of iterations: yes; reading a small file: no).

    Returns
    -------
    Progress
        Call ``update(n, postfix)`` per unit of work and ``close()`` at the end.
    """
    if not enabled:
        return Progress()
    stream = sys.stderr if stream is None else stream
    if _in_notebook():
        if _has_widgets():
            from tqdm.notebook import tqdm as notebook_tqdm

            return _TqdmProgress(notebook_tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale))
        return PlainProgress(
            total=total,
            desc=desc,
            unit=unit,
            stream=stream,
            unit_scale=unit_scale,
            summary=summary,
            interval=PLAIN_INTERVAL_S,
        )
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return _TqdmProgress(
            tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=stream, dynamic_ncols=True)
        )
    return PlainProgress(
        total=total,
        desc=desc,
        unit=unit,
        stream=stream,
        unit_scale=unit_scale,
        summary=summary,
        interval=PLAIN_INTERVAL_S,
    )
