"""The ``select`` command's core: order IDs from the order list, filtered.

The list has no status, time or type filter of its own (only
``sub_account_id`` is documented), so every page is read and filtered
here.  Paging is the preflight's: pages built by the client, the server's
smaller page size followed, every ``created_at`` form read.  The list is
taken to be newest first, so paging stops at the first page whose oldest
order is older than ``--since``; ``all_pages`` turns that off for a list
that turns out not to be sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import structlog

from batchcancel.api import ThanksIo
from batchcancel.cancel import (
    EXIT_CREDENTIALS,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_SIGNAL,
    list_fetcher,
    request_job,
)
from batchcancel.config import Settings
from batchcancel.errors import ConfigError
from batchcancel.outcomes import normalise_status
from batchcancel.plan import Listed, PageView, walk_pages
from batchcancel.run import Job

log = structlog.get_logger("batchcancel")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which listed orders ``select`` writes out."""

    statuses: frozenset[str]
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    kinds: frozenset[str] = frozenset()  # empty: every type

    def matches(self, order: Listed) -> bool:
        """True when the order passes every filter (pure)."""
        if order.status not in self.statuses:
            return False
        if self.kinds and order.kind not in self.kinds:
            return False
        if self.since is None and self.until is None:
            return True
        if order.created_at is None:
            return False  # no time, so no way to say it is in the range
        if self.since is not None and order.created_at < self.since:
            return False
        return self.until is None or order.created_at < self.until


def make_selection(statuses: Iterable[str], since: str | None,
                   until: str | None, kinds: Iterable[str]) -> Selection:
    """Check the flags of ``select`` into a ``Selection``."""
    wanted = {normalise_status(s) for s in statuses}
    if None in wanted or not wanted:
        raise ConfigError("--status must name a status such as Reviewing")
    selection = Selection(
        statuses=frozenset(s for s in wanted if s is not None),
        since=parse_moment("--since", since),
        until=parse_moment("--until", until),
        kinds=frozenset(k.strip().lower() for k in kinds if k.strip()),
    )
    if selection.since and selection.until and selection.since >= selection.until:
        raise ConfigError("--since must be before --until")
    return selection


def parse_moment(flag: str, text: str | None) -> datetime | None:
    """An ISO 8601 time (``2026-12-03T10:00Z``); without a zone, UTC."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an ISO 8601 time; write it "
                          "as 2026-12-03T10:00Z or 2026-12-03T10:00+01:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(slots=True)
class SelectStats:
    """What one ``select`` run saw."""

    pages: int = 0
    listed: int = 0
    selected: int = 0
    pages_failed: int = 0
    unsorted: bool = False


async def select_orders(settings: Settings, token: str, selection: Selection,
                        out: TextIO, *, all_pages: bool = False,
                        handle_signals: bool = True) -> tuple[SelectStats, int]:
    """Write the ID of every selected order to ``out`` as CSV.

    IDs go out page by page, flushed, so a pipe into ``cancel`` gets them
    as soon as they are known.  Returns what was seen and the exit code.
    """
    stats = SelectStats()
    out.write("order_id\n")
    out.flush()
    async with request_job(settings, token,
                           handle_signals=handle_signals) as (client, job):
        await _walk(job, client, settings, selection, out, stats, all_pages)
    code = _exit_code(job, stats)
    log.info("select.finished", exit_code=code, pages=stats.pages,
             listed=stats.listed, selected=stats.selected,
             pages_failed=stats.pages_failed, requests_sent=job.stats.requests_sent)
    return stats, code


async def _walk(job: Job, client: ThanksIo, settings: Settings,
                selection: Selection, out: TextIO, stats: SelectStats,
                all_pages: bool) -> None:
    seen: set[int] = set()
    oldest: dict[int | None, datetime] = {}
    pages = walk_pages(list_fetcher(job, client, "select"),
                       sub_accounts=settings.sub_accounts or (None,),
                       per_page=settings.page_size,
                       cutoff=None if all_pages else selection.since,
                       done=lambda: job.stopping)
    async for sub_account, view in pages:
        if view is None:
            stats.pages_failed += 1
            continue
        stats.pages += 1
        stats.listed += len(view.orders)
        _check_sorted(view, oldest, sub_account, stats)
        chosen = [o.order_id for o in view.orders
                  if selection.matches(o) and o.order_id not in seen]
        seen.update(chosen)
        stats.selected += len(chosen)
        out.writelines(f"{order_id}\n" for order_id in chosen)
        out.flush()


def _check_sorted(view: PageView, oldest: dict[int | None, datetime],
                  sub_account: int | None, stats: SelectStats) -> None:
    # Early stopping is right only if the list is newest first.  An order
    # newer than the oldest of an earlier page says it is not: warn once.
    created = [o.created_at for o in view.orders if o.created_at is not None]
    if not created:
        return
    before = oldest.get(sub_account)
    if before is not None and max(created) > before and not stats.unsorted:
        stats.unsorted = True
        log.warning("select.list_unsorted", sub_account_id=sub_account,
                    hint="re-run with --all-pages")
    oldest[sub_account] = min(created) if before is None else min(before,
                                                                  *created)


def _exit_code(job: Job, stats: SelectStats) -> int:
    if job.stats.stopped_by == "credentials":
        return EXIT_CREDENTIALS
    if job.stats.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[job.stats.stopped_by]
    return EXIT_INCOMPLETE if stats.pages_failed else EXIT_OK


def describe(selection: Selection, sub_accounts: Sequence[int]) -> dict[str, object]:
    """The selection as log keys."""
    return {
        "statuses": sorted(selection.statuses),
        "since": selection.since.isoformat() if selection.since else None,
        "until": selection.until.isoformat() if selection.until else None,
        "types": sorted(selection.kinds) or None,
        "sub_accounts": list(sub_accounts) or None,
    }
