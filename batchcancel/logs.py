"""structlog set-up: events to stderr, console form on a terminal, JSON
lines elsewhere, and the token scrubbed from every record.

Redaction works on the rendered line, the last step before output, so that
no processor, exception formatter or future key can let the token through.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
LEVELS = ("debug", "info", "warning", "error")


class Console:
    """stderr shared by log lines and a live status line that never garble."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._status = ""
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
        if self._broken:
            return
        try:
            self._clear_status()
            self.stream.write(self.scrub(text) + "\n")
            self._redraw_status()
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True

    def status(self, text: str) -> None:
        """Replace the live status line (terminals only)."""
        if not self.is_terminal or self._broken:
            return
        self._status = self.scrub(text)
        try:
            self.stream.write("\r\x1b[K" + self._status)
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True

    def end_status(self) -> None:
        if self._status and not self._broken:
            try:
                self._clear_status()
                self.stream.flush()
            except (OSError, ValueError):
                self._broken = True
        self._status = ""

    def _clear_status(self) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")

    def _redraw_status(self) -> None:
        if self._status:
            self.stream.write(self._status)


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
    console.secrets = tuple(s for s in secrets if s)
    as_json = fmt == "json" or (fmt == "auto" and not console.is_terminal)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
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
