"""The emails a placed or paid order sends: the customer's confirmation, the admin's notice."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Order, OrderLine
from storefront.services.outbox.composing import InvalidEmailAddress, compose_email
from storefront.services.outbox.queueing import queue_emails

log = logging.getLogger(__name__)


def order_url(base_url: str, order: Order) -> str:
    return f"{base_url.rstrip('/')}/orders/{order.number}"


async def queue_order_emails(
    session: AsyncSession,
    order: Order,
    lines: list[OrderLine],
    admin_email: str,
    base_url: str,
) -> None:
    """Queue the customer's confirmation and the admin's notice in the caller's transaction."""
    context = {"order": order, "lines": lines, "order_url": order_url(base_url, order)}
    recipients = [(order.email, "order_confirmation")]
    if admin_email:
        recipients.append((admin_email, "admin_new_order"))
    emails = []
    for to, template in recipients:
        try:
            emails.append(compose_email(to, template, context, f"{template}:{order.number}"))
        except InvalidEmailAddress as error:
            # A bad address must not cost the shopper the order; operators see it in the log.
            log.warning("order %s: %s not queued: %s", order.number, template, error)
    await queue_emails(session, emails)
