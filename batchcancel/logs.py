"""structlog set-up: events to stderr, console form on a terminal, JSON
lines elsewhere, and the token scrubbed from every record.

Redaction works on the rendered line, the last step before output, so that
no processor, exception formatter or future key can let the token through.

structlog is imported only when logging is configured: a command that
merely prints (``--version``, ``--help``) should start at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO

REDACTED = "[REDACTED]"
LEVELS = ("debug", "info", "warning", "error")


class LiveDisplay(Protocol):
    """A display that redraws in place (the progress bar) below log lines."""

    def print(self, text: str) -> None:
        """Write one whole line above the display."""

    def hide(self) -> None:
        """Take the display off the screen (someone else needs the terminal)."""

    def unhide(self) -> None:
        """Put it back after ``hide``."""

    def close(self) -> None:
        """Leave its last frame on the screen and stop redrawing."""


class Console:
    """stderr shared by log lines and a live display that never garble.

    While a live display is attached every line goes through it, so that it
    is written above the display instead of into the middle of it.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._display: LiveDisplay | None = None
        self._hidden = False
        self._broken = False
        self.secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def line(self, text: str) -> None:
        """Write one whole line (a log event or the summary).

        Best effort: a closed stderr (``... 2>&1 | head``) must not stop the
        run, whose record is the report, not the log.
        """
        text = self.scrub(text)
        display = self._display
        self._guarded(lambda: display.print(text) if display is not None
                      else self._write(text + "\n"))

    def attach(self, display: LiveDisplay) -> None:
        """Show ``display`` until ``end_status``; terminals only."""
        if self.is_terminal and not self._broken:
            self._display, self._hidden = display, False

    @property
    def live(self) -> bool:
        """Whether a display is attached and on the screen."""
        return self._display is not None and not self._hidden and not self._broken

    def end_status(self) -> None:
        """Take the display off the screen, e.g. for a question."""
        if self._display is not None and not self._hidden:
            self._hidden = True
            self._guarded(self._display.hide)

    def resume_status(self) -> None:
        """Put the display back after ``end_status``."""
        if self._display is not None and self._hidden:
            self._hidden = False
            self._guarded(self._display.unhide)

    def detach(self) -> None:
        """Stop the display for good; its last frame stays on the screen."""
        display, self._display = self._display, None
        if display is not None:
            self._guarded(display.close)
        self._hidden = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _guarded(self, action: Callable[[], object]) -> None:
        if self._broken:
            return
        try:
            action()
        except (OSError, ValueError):
            self._broken = True


class _ConsoleLogger:
    """A structlog logger that writes rendered lines through the Console."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def msg(self, message: str) -> None:
        self._console.line(message)

    debug = info = warning = warn = error = critical = exception = msg


def configure(console: Console, *, level: str = "info", fmt: str = "auto",
              secrets: Iterable[str] = ()) -> None:
    """Set up structlog for this process."""
    import logging

    import structlog

    console.secrets = tuple(s for s in secrets if s)
    as_json = fmt == "json" or (fmt == "auto" and not console.is_terminal)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper())
        ),
        logger_factory=lambda *args: _ConsoleLogger(console),
        cache_logger_on_first_use=False,
    )
