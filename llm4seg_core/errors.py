"""The project's exception types.

Every mistake a user can make (a bad file, a missing weight file, a wrong
shape, no GPU) raises :class:`LLM4SegError` with a message that says what
happened and what to do. Front ends catch it: the CLI prints the message and
exits 2, the GUIs show it in a notification or dialog and keep running.
"""

from __future__ import annotations


class LLM4SegError(Exception):
    """A user-caused error; ``str(err)`` is a one-line message meant for a person."""


class Cancelled(Exception):
    """Raised inside long work (segmentation, training) when its cancel flag is set."""
