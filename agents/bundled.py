"""Every bundled example worker: the e-commerce choreography's and the three workflows'."""

from __future__ import annotations

from agents import content, ecommerce, loan, medical
from agents.worker import Handler

HANDLERS: dict[str, dict[str, Handler]] = {
    **ecommerce.HANDLERS, **loan.HANDLERS, **content.HANDLERS, **medical.HANDLERS,
}
