"""Shared test set-up."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse


class _ResponseWithWriter(ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new
    ``stream_writer`` argument (pnuckowski/aioresponses#289, open).  A stub
    writer with nothing written is all a finished fake response needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


_NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


@pytest.fixture(autouse=True)
def _aioresponses_on_aiohttp_314(monkeypatch: pytest.MonkeyPatch) -> None:
    if _NEEDS_WRITER:
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _ResponseWithWriter)
