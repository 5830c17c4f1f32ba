"""How the API shows an order: one shape per endpoint, as the API reference records.

The endpoints disagree with each other on purpose, because the real API does: cancel
answers a lower-case `status` plus `display_status`, list and track answer Title Case;
cancel and track show times as "YYYY-MM-DD HH:MM:SS", list in one of three forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from ._orders import Order

# Fixed-looking URLs under a reserved top-level domain that can never resolve.
PREVIEW_URL = "https://previews.sandbox.invalid/orders/{id}/{name}.jpg"


def cancel_view(order: Order) -> dict[str, object]:
    """The `order` object of a cancel answer."""
    return {
        "id": order.id,
        "sub_account_id": order.sub_account_id,
        "type": order.kind[0],
        "display_type": order.kind[1],
        "size": order.kind[2],
        "style": order.style,
        "message": order.message,
        "return_name": order.return_name,
        "front_image": PREVIEW_URL.format(id=order.id, name="front"),
        "total_estimated_recipients": order.recipients,
        "total_recipients": _delivered_recipients(order),
        "authorization_total": order.authorization_total,
        "grand_total": order.grand_total,
        "sales_tax_total": 0,
        "leads_fee": 0,
        "settled": 1,
        "transaction_id": 30_000 + order.id % 10_000,
        "status": order.status,
        "display_status": title(order.status),
        "method": "api",
        "display_trigger": "API",
        "created_at": sql_time(order.created_at),
        "updated_at": sql_time(order.updated_at),
    }


def track_view(order: Order) -> dict[str, object]:
    """The `data` object of a track answer."""
    shown = {
        "sub_account_id": order.sub_account_id,
        "type": order.kind[0],
        "message": order.message,
        "return_name": order.return_name,
        "style": order.style,
        "size": order.kind[2],
        "front_image": PREVIEW_URL.format(id=order.id, name="front"),
        "high_quality_preview": PREVIEW_URL.format(id=order.id, name="preview"),
        "total_estimated_recipients": order.recipients,
        "authorization_total": order.authorization_total,
        "total_recipients": _delivered_recipients(order),
        "grand_total": order.grand_total,
        "status": title(order.status),
        "method": "API",
        "created_at": sql_time(order.created_at),
        "updated_at": sql_time(order.updated_at),
    }
    return {
        "id": order.id,
        "order": shown,
        "stats": _stats(order),
        "errors": [],
        "returned": [],
    }


def list_item(order: Order) -> dict[str, object]:
    """One entry of `data` in a list answer."""
    return {
        "id": order.id,
        "message": order.message,
        "size": order.kind[2],
        "sub_account_id": order.sub_account_id,
        "type": order.kind[0],
        "display_type": order.kind[1],
        "style": order.style,
        "front_image": PREVIEW_URL.format(id=order.id, name="front"),
        "high_quality_preview": PREVIEW_URL.format(id=order.id, name="preview"),
        "authorization_total": order.authorization_total,
        "grand_total": order.grand_total,
        "order_total": order.grand_total,
        "total_estimated_recipients": order.recipients,
        "total_recipients": _delivered_recipients(order),
        "recipient_count": order.recipients,
        "status": title(order.status),
        "method": "API",
        # The book has already closed expired windows, so Reviewing means "still open".
        "cancellable": order.status == "reviewing",
        "total_scans": _scans(order),
        "created_at": shown_time(order.created_at, order.time_format),
        "updated_at": shown_time(order.updated_at, order.time_format),
    }


def list_page(
    items: Sequence[dict[str, object]], total: int, page: int, per_page: int, path: str
) -> dict[str, object]:
    """A whole list answer around one page of items, in Laravel's paginator shape."""
    last_page = max(1, math.ceil(total / per_page))
    first = (page - 1) * per_page + 1

    # The API's own links carry only `page`: the size and the filter are dropped.
    return {
        "data": list(items),
        "links": {
            "first": f"{path}?page=1",
            "last": f"{path}?page={last_page}",
            "prev": f"{path}?page={page - 1}" if page > 1 else None,
            "next": f"{path}?page={page + 1}" if page < last_page else None,
        },
        "meta": {
            "current_page": page,
            "from": first if items else None,
            "last_page": last_page,
            "path": path,
            "per_page": str(per_page),
            "to": first + len(items) - 1 if items else None,
            "total": total,
        },
    }


def title(status: str) -> str:
    """The display form of a raw status: "reviewing" becomes "Reviewing"."""
    return status.capitalize()


def sql_time(timestamp: float) -> str:
    """A time as cancel and track show it: "YYYY-MM-DD HH:MM:SS", UTC."""
    return _utc(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def shown_time(timestamp: float, time_format: str) -> object:
    """A time as the list shows it, in the order's format."""
    moment = _utc(timestamp)
    if time_format == "sql":
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if time_format == "object":
        return {
            "date": moment.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "timezone_type": 3,
            "timezone": "UTC",
        }
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _delivered_recipients(order: Order) -> int:
    # Pieces count as sent once the order has left review; none for a cancelled one.
    unsent = ("reviewing", "cancelled", "processing", "paused", "error")
    return 0 if order.status in unsent else order.recipients


def _scans(order: Order) -> int:
    return order.recipients // 4 if order.status == "delivered" else 0


def _stats(order: Order) -> dict[str, int]:
    stats = dict.fromkeys(
        (
            "delivered",
            "processing",
            "printed",
            "in_transit",
            "in_local_area",
            "processed_for_delivery",
            "re_routed",
            "returned_to_sender",
            "failed",
            "scans",
            "multi_scans",
        ),
        0,
    )
    if order.status == "delivered":
        stats["delivered"] = order.recipients
        stats["scans"] = _scans(order)
    elif order.status in ("printing", "printed", "fulfilled", "shipped"):
        stats["printed"] = order.recipients
    elif order.status == "processing":
        stats["processing"] = order.recipients
    return stats
