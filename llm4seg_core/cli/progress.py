"""The one progress bar of the command line: tqdm on stderr, or plain messages when quiet."""

from __future__ import annotations

import sys
from typing import Any

from llm4seg_core.jobs import Callbacks


class ProgressBar:
    """A bar counting ``unit`` (the caller's: "slice" for segmentation, "step" for training).

    The bar appears with the first progress report and closes when the count
    reaches its total, so two bars driven one after the other by one engine
    call (fine-tune, then segment) stack cleanly. Disabled (``enabled=False``,
    the ``-q`` flag) it draws nothing and :meth:`write` prints on stderr. Use
    it as a context manager, or call :meth:`close`; :meth:`callbacks` gives the
    engine's :class:`~llm4seg_core.jobs.Callbacks` that drive it.
    """

    def __init__(self, desc: str, unit: str, enabled: bool = True) -> None:
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self._bar: Any = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr,
                             dynamic_ncols=True)
        bar = self._bar
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)
        if done >= total:
            self.close()

    def write(self, text: str) -> None:
        """A message above the bar (tqdm's write, on stdout; disabled: a line on stderr)."""
        if not self.enabled:
            print(text, file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        tqdm.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def callbacks(self, **fields: Any) -> Callbacks:
        """Callbacks whose progress moves this bar (``fields``: the other Callbacks fields)."""
        return Callbacks(on_progress=self.update, **fields)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
