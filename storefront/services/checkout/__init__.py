"""Checkout: turn a cart into an order in one transaction, paid from the wallet or reserved.

Import each name from the module that defines it."""
