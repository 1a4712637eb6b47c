"""Example workers for the bundled e-commerce choreography.

They decide outcomes from the order itself, never at random, so a sample order can be
written to run out of stock or have its card declined:
- stock comes from `STOCK` below; an item asking for more than is in stock is a shortage;
- a card whose number ends in 0002 is declined (as with the usual test cards);
- an order with `"delivery": "lost"` is shipped but never confirmed delivered.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agents.worker import ActionRefused, Handler, Result
from choreo.envelope import Event

STOCK = {
    "SKU-BOOK": 500,
    "SKU-MUG": 200,
    "SKU-HEADPHONES": 40,
    "SKU-LAPTOP": 12,
    "SKU-CAMERA": 3,
    "SKU-GPU": 0,
}
DECLINED_CARD_SUFFIX = "0002"


def _order(action: Event) -> dict[str, Any]:
    data = action.payload.get("data")
    if not isinstance(data, dict) or "order_id" not in data:
        raise ActionRefused("the action's data has no order_id")
    return dict(data)


async def check_inventory(action: Event) -> list[Result]:
    order = _order(action)
    short = []
    for item in order.get("items", []):
        wanted = int(item.get("quantity", 1))
        available = STOCK.get(item.get("sku"), 0)
        if wanted > available:
            short.append({"sku": item.get("sku"), "wanted": wanted, "available": available})
    if short:
        missing = sum(s["wanted"] - s["available"] for s in short)
        return [Result("inventory_shortage",
                       {**order, "shortage_quantity": missing, "short_items": short})]
    return [Result("inventory_confirmed", {**order, "items_available": True})]


def _charge(order: dict[str, Any], retry_count: int | None) -> Result:
    card = str(order.get("payment", {}).get("card_number", ""))
    if card.endswith(DECLINED_CARD_SUFFIX):
        failed = {**order, "payment_status": "declined", "decline_reason": "card_declined",
                  "retry_count": 0 if retry_count is None else retry_count + 1}
        return Result("payment_failed", failed)
    reference = hashlib.sha256(f"pay/{order['order_id']}".encode()).hexdigest()[:12]
    return Result("payment_successful",
                  {**order, "payment_status": "confirmed", "payment_reference": reference})


async def process_payment(action: Event) -> list[Result]:
    order = _order(action)
    order.pop("items_available", None)
    return [_charge(order, None)]


async def retry_payment(action: Event) -> list[Result]:
    order = _order(action)
    return [_charge(order, int(order.get("retry_count", 0)))]


async def cancel_order(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("order_cancelled", {"order_id": order["order_id"],
                                       "reason": order.get("decline_reason", "cancelled"),
                                       "retry_count": order.get("retry_count", 0)})]


async def request_manual_review(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("manual_review_requested",
                   {"order_id": order["order_id"], "order_value": order.get("order_value"),
                    "queue": "high-value"})]


async def notify_suppliers(action: Event) -> list[Result]:
    order = _order(action)
    skus = sorted({s["sku"] for s in order.get("short_items", [])})
    return [Result("suppliers_notified", {"order_id": order["order_id"], "skus": skus})]


async def initiate_fulfillment(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("fulfillment_complete", {**order, "items_packed": True})]


async def schedule_shipping(action: Event) -> list[Result]:
    order = _order(action)
    tracking = "TRK" + hashlib.sha256(f"ship/{order['order_id']}".encode()).hexdigest()[:10]
    shipped = {**order, "tracking_number": tracking.upper()}
    results = [Result("shipping_complete", shipped)]
    if order.get("delivery") != "lost":
        # The simulated carrier confirms delivery straight away.
        results.append(Result("delivery_confirmed",
                              {"order_id": order["order_id"], "tracking_number": tracking.upper(),
                               "customer_id": order.get("customer_id")}))
    return results


async def send_tracking_notification(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("tracking_notification_sent",
                   {"order_id": order["order_id"], "tracking_number": order.get("tracking_number"),
                    "channel": "email"})]


async def request_product_review(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("review_requested", {"order_id": order["order_id"],
                                        "customer_id": order.get("customer_id")})]


async def close_order(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("order_closed", {"order_id": order["order_id"],
                                    "steps": action.payload["trigger"]["event_types"]})]


async def flag_customer(action: Event) -> list[Result]:
    data = action.payload.get("data") or {}
    customer = data.get("customer_id")
    if not customer:
        raise ActionRefused("the action's data has no customer_id")
    return [Result("customer_flagged", {"customer_id": customer,
                                        "failed_payments": action.payload.get("count"),
                                        "last_order_id": data.get("order_id")})]


async def escalate_stalled_order(action: Event) -> list[Result]:
    order = _order(action)
    return [Result("stalled_order_escalated",
                   {"order_id": order["order_id"], "waiting_for": action.payload["missing_step"],
                    "deadline": action.payload["deadline"], "queue": "order-desk"})]


async def send_checkout_reminder(action: Event) -> list[Result]:
    data = action.payload.get("data") or {}
    if not data.get("cart_id"):
        raise ActionRefused("the action's data has no cart_id")
    return [Result("checkout_reminder_sent", {"cart_id": data["cart_id"],
                                              "customer_id": data.get("customer_id"),
                                              "channel": "email"})]


HANDLERS: dict[str, dict[str, Handler]] = {
    "inventory_management": {"check_inventory": check_inventory},
    "payment_processing": {"process_payment": process_payment, "retry_payment": retry_payment},
    "order_management": {"cancel_order": cancel_order, "close_order": close_order},
    "fraud_detection": {"request_manual_review": request_manual_review,
                        "flag_customer": flag_customer},
    "supplier_management": {"notify_suppliers": notify_suppliers},
    "order_fulfillment": {"initiate_fulfillment": initiate_fulfillment},
    "shipping_management": {"schedule_shipping": schedule_shipping},
    "customer_communication": {"send_tracking_notification": send_tracking_notification,
                               "escalate_stalled_order": escalate_stalled_order,
                               "send_checkout_reminder": send_checkout_reminder},
    "customer_engagement": {"request_product_review": request_product_review},
}
