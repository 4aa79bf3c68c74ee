"""Paystack payments: attempts, the one exactly-once finalize, closing, webhook records and
reconciliation.

A payment row is written (and committed) before Paystack hears of it, one row and one fresh
reference per attempt. Value is given only by `finalize_payment`, after Paystack's verify agrees
on status, reference, amount and currency, and only by the caller whose conditional
`pending → success` update wins; callback, webhook and reconciler all come through here.

Import each name from the module that defines it.
"""
