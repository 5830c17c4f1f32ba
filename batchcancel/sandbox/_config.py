"""The settings of one sandbox: its seeded order book, its rate limit, its faults.

Both values are frozen and check themselves on construction, so a bad setting fails
where it was written, not in the middle of a request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, cast, get_args

RetryAfterStyle = Literal["seconds", "date", "none"]
FaultRetryAfterStyle = Literal["seconds", "date", "none", "mixed"]
RefusalStyle = Literal["200", "4xx", "mixed"]
CreatedAtFormat = Literal["iso", "sql", "object", "mixed"]
Endpoint = Literal["cancel", "list", "track"]
FaultName = Literal[
    "throttle_429",
    "server_error",
    "drop_before",
    "drop_after",
    "late_answer",
    "garbled_body",
]

# One scripted fault: what one request of one order meets, in its turn. The 429
# forms name their header; the refusals do no work ("refuse_200" is a 200 whose
# body holds an error and no order, "refuse_4xx" a 409 with a message).
ScriptStep = Literal[
    "429_seconds",
    "429_date",
    "429_none",
    "429_reset",
    "server_error",
    "drop_before",
    "drop_after",
    "late_answer",
    "garbled_body",
    "refuse_200",
    "refuse_4xx",
]
SCRIPT_STEPS: tuple[ScriptStep, ...] = get_args(ScriptStep)
Scripts = Mapping[int, tuple[ScriptStep, ...]]

# Raw (lower-case) order statuses, the union of every value the API reference lists.
STATUSES = (
    "reviewing",
    "cancelled",
    "processing",
    "printing",
    "printed",
    "fulfilled",
    "shipped",
    "delivered",
    "paused",
    "error",
)

DEFAULT_STATUS_MIX: Mapping[str, float] = {
    "reviewing": 60,
    "cancelled": 10,
    "processing": 8,
    "printing": 4,
    "printed": 4,
    "fulfilled": 6,
    "shipped": 2,
    "delivered": 2,
    "paused": 2,
    "error": 2,
}

# The order in which one draw per request is tested against the fault probabilities.
FAULT_NAMES: tuple[FaultName, ...] = get_args(FaultName)

# Faults that first do the work and then spoil the answer; list and track have no
# work to do, so there these faults are not drawn and the request is answered.
APPLY_THEN_SPOIL: frozenset[FaultName] = frozenset(
    ("drop_after", "late_answer", "garbled_body")
)


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-request fault probabilities, and fault scripts for chosen orders.

    At most one fault strikes a request. `scripts` maps an order ID to the faults
    its successive cancel requests meet, one step per request; `track_scripts`
    does the same for its track requests. Once its script is spent an order is
    served normally again, and while a step is due no probability is drawn.
    """

    throttle_429: float = 0.0
    server_error: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    late_answer: float = 0.0
    garbled_body: float = 0.0
    retry_after_style: FaultRetryAfterStyle = "mixed"
    late_delay: float = 2.0
    endpoints: tuple[Endpoint, ...] = ("cancel",)
    scripts: Scripts = field(default_factory=dict)
    track_scripts: Scripts = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("scripts", "track_scripts"):
            object.__setattr__(self, name, _scripts(name, getattr(self, name)))
        for name, probability in self.probabilities():
            _require(0.0 <= probability <= 1.0, f"Faults.{name} must be in [0, 1]")

        total = sum(probability for _, probability in self.probabilities())
        _require(total <= 1.0 + 1e-9, "fault probabilities must add up to at most 1")
        _require_choice(
            "Faults.retry_after_style", self.retry_after_style, FaultRetryAfterStyle
        )
        _require(self.late_delay >= 0.0, "Faults.late_delay must not be negative")
        for endpoint in self.endpoints:
            _require_choice("Faults.endpoints item", endpoint, Endpoint)

    def probabilities(self) -> tuple[tuple[FaultName, float], ...]:
        """Each fault's name and probability, in the order they are tested."""
        return tuple((name, float(getattr(self, name))) for name in FAULT_NAMES)

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> Faults:
        """Build faults from a decoded JSON object; unknown keys are an error."""
        known = {each.name for each in fields(cls)}
        unknown = sorted(set(body) - known)
        _require(not unknown, f"unknown fault settings: {', '.join(unknown)}")

        values = dict(body)
        endpoints = values.get("endpoints")
        if isinstance(endpoints, list):
            values["endpoints"] = tuple(endpoints)

        # Field types are checked by __post_init__ and the comparisons in it.
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(f"bad fault settings: {exc}") from None


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything that shapes one sandbox; equal configs give equal sandboxes."""

    orders: int = 2000
    seed: int = 1
    # A well-known value on purpose: the sandbox serves loopback only, holds no data.
    token: str = "sandbox-token"  # noqa: S105
    first_id: int = 100_000
    status_mix: Mapping[str, float] | None = None
    review_window: float = 3600.0
    max_age: float | None = None
    max_page_size: int = 100
    rate_limit: int | None = None
    rate_window: float = 60.0
    rate_headers: bool = True
    reset_header: bool = False
    retry_after: RetryAfterStyle = "seconds"
    refusal_style: RefusalStyle = "mixed"
    auth_status: int = 401
    created_at_format: CreatedAtFormat = "iso"
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        _require(self.orders >= 0, "orders must not be negative")
        _require(self.first_id >= 1, "first_id must be a positive integer")
        _require(bool(self.token), "token must not be empty")
        _require(_positive(self.review_window), "review_window must be positive")
        _require(
            self.max_age is None or _positive(self.max_age), "max_age must be positive"
        )
        _require(self.max_page_size >= 1, "max_page_size must be at least 1")
        _require(
            self.rate_limit is None or self.rate_limit >= 1,
            "rate_limit must be at least 1 or None",
        )
        _require(_positive(self.rate_window), "rate_window must be positive")
        _require(self.auth_status in (401, 403), "auth_status must be 401 or 403")
        _require_choice("retry_after", self.retry_after, RetryAfterStyle)
        _require_choice("refusal_style", self.refusal_style, RefusalStyle)
        _require_choice("created_at_format", self.created_at_format, CreatedAtFormat)
        _check_status_mix(self.mix())

    def mix(self) -> Mapping[str, float]:
        """The status weights in force: the configured ones or the default mix."""
        return DEFAULT_STATUS_MIX if self.status_mix is None else self.status_mix

    def reviewing_max_age(self) -> float:
        """The upper bound of a seeded Reviewing order's age, in seconds."""
        return self.review_window * 0.9 if self.max_age is None else self.max_age


def _scripts(name: str, value: object) -> dict[int, tuple[ScriptStep, ...]]:
    # JSON object keys are strings, so "100001" names order 100001 as well.
    _require(isinstance(value, Mapping), f"Faults.{name} must map order IDs to lists")
    scripts: dict[int, tuple[ScriptStep, ...]] = {}
    for key, steps in cast(Mapping[object, object], value).items():
        text = str(key)
        _require(text.isascii() and text.isdigit(), f"Faults.{name}: bad ID {key!r}")
        _require(isinstance(steps, list | tuple), f"Faults.{name}[{key}] is a list")
        for step in cast(list[object], steps):
            _require_choice(f"Faults.{name} step", step, ScriptStep)
        scripts[int(text)] = tuple(cast(list[ScriptStep], steps))
    return scripts


def _check_status_mix(mix: Mapping[str, float]) -> None:
    unknown = sorted(set(mix) - set(STATUSES))
    _require(not unknown, f"unknown statuses in status_mix: {', '.join(unknown)}")
    _require(
        all(weight >= 0 for weight in mix.values()),
        "status_mix weights must not be negative",
    )
    _require(sum(mix.values()) > 0, "status_mix needs at least one positive weight")


def _positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_choice(name: str, value: object, choices: object) -> None:
    allowed = cast(tuple[str, ...], get_args(choices))
    _require(value in allowed, f"{name} must be one of {', '.join(allowed)}")
