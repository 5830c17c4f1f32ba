"""Shared test set-up."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse
from support import TOKEN

from batchcancel.sandbox import Sandbox, SandboxConfig


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


SandboxFactory = Callable[..., Coroutine[Any, Any, Sandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes on loopback (token: support.TOKEN); stop them after."""
    started: list[Sandbox] = []

    async def start(**settings: Any) -> Sandbox:
        sandbox = Sandbox(SandboxConfig(token=TOKEN, **settings))
        await sandbox.start("127.0.0.1", 0)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        await sandbox.stop()
