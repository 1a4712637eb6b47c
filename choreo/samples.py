"""Sample orders for the bundled e-commerce choreography, and what each should produce."""

from __future__ import annotations

from typing import Any

from choreo.envelope import new_event

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"


def order(order_id: str, items: list[tuple[str, int]], value: float, card: str = CARD_OK,
          **extra: Any) -> dict[str, Any]:
    """An order_received envelope as a shop would publish it."""
    payload = {
        "order_id": order_id,
        "customer_id": f"cust-{order_id}",
        "order_value": value,
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": qty} for sku, qty in items],
        "payment": {"method": "card", "card_number": card},
        **extra,
    }
    return new_event("order_received", payload, source="shop.checkout",
                     correlation_id=order_id).as_dict()


# The causal tree each sample should grow (see choreo.trail.render), once the deadlines of
# the sequence and absence patterns have passed.
HAPPY_TRAIL = [
    "order_received",
    "  -> check_inventory @inventory_management",
    "    inventory_confirmed",
    "      -> process_payment @payment_processing",
    "        payment_successful",
    "          -> initiate_fulfillment @order_fulfillment",
    "            fulfillment_complete",
    "              -> schedule_shipping @shipping_management",
    "                shipping_complete",
    "                  -> send_tracking_notification @customer_communication",
    "                    tracking_notification_sent",
    "                  -> close_order @order_management",  # order-to-shipment completes
    "                    order_closed",
    "                delivery_confirmed",
    "                  -> request_product_review @customer_engagement",
    "                    review_requested",
]
HIGH_VALUE_TRAIL = [
    "order_received",
    "  -> request_manual_review @fraud_detection",
    "    manual_review_requested",
    *HAPPY_TRAIL[1:],
]
STALLED = [  # order-to-shipment times out waiting for payment_successful
    "  -> escalate_stalled_order @customer_communication",
    "    stalled_order_escalated",
]
OUT_OF_STOCK_TRAIL = [
    "order_received",
    "  -> check_inventory @inventory_management",
    "    inventory_shortage",
    "      -> notify_suppliers @supplier_management",
    "        suppliers_notified",
    *STALLED,
]
DECLINED_TRAIL = [
    "order_received",
    "  -> check_inventory @inventory_management",
    "    inventory_confirmed",
    "      -> process_payment @payment_processing",
    "        payment_failed",
    "          -> retry_payment @payment_processing",
    "            payment_failed",
    "              -> retry_payment @payment_processing",
    "                payment_failed",
    "                  -> retry_payment @payment_processing",
    "                    payment_failed",
    "                      -> cancel_order @order_management",
    "                        order_cancelled",
    "                  -> flag_customer @fraud_detection",  # the third failure in 10 minutes
    "                    customer_flagged",
    *STALLED,
]
ABANDONED_TRAIL = [
    "checkout_started",
    "  -> send_checkout_reminder @customer_communication",
    "    checkout_reminder_sent",
]
def checkout(cart_id: str) -> dict[str, Any]:
    """A checkout_started envelope: a customer began paying for a cart."""
    return new_event("checkout_started", {"cart_id": cart_id, "customer_id": f"cust-{cart_id}",
                                          "cart_value": 42.5},
                     source="shop.web", correlation_id=cart_id).as_dict()


def with_short_windows(config_text: str) -> str:
    """The bundled choreography with its windows cut to seconds, to watch deadlines pass.

    `make demo` and the end-to-end test use it: an abandoned checkout is reported after 4 s
    instead of 30 min, a stalled order after 8 s instead of 10 min.
    """
    replacements = {
        'within = "30m"': 'within = "4s"',
        'max_interval = "10m"': 'max_interval = "8s"',
        'allowed_lateness = "10s"': 'allowed_lateness = "1s"',
        'idle_timeout = "30s"': 'idle_timeout = "2s"',
    }
    for old, new in replacements.items():
        if old not in config_text:
            raise ValueError(f"the choreography no longer contains {old!r}")
        config_text = config_text.replace(old, new)
    return config_text


def sample_orders(suffix: str = "") -> list[tuple[str, dict[str, Any], list[str]]]:
    """(description, first envelope, expected trail) for each sample."""
    return [
        ("happy path", order(f"ord-1001{suffix}", [("SKU-BOOK", 2), ("SKU-MUG", 1)], 54.90),
         HAPPY_TRAIL),
        ("high value", order(f"ord-1002{suffix}", [("SKU-LAPTOP", 1)], 2399.00),
         HIGH_VALUE_TRAIL),
        ("out of stock", order(f"ord-1003{suffix}", [("SKU-GPU", 1)], 1899.00 / 2),
         OUT_OF_STOCK_TRAIL),
        ("declined payment", order(f"ord-1004{suffix}", [("SKU-HEADPHONES", 1)], 129.00,
                                   card=CARD_DECLINED), DECLINED_TRAIL),
        ("abandoned checkout", checkout(f"cart-2001{suffix}"), ABANDONED_TRAIL),
    ]
