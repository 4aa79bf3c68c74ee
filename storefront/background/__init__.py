"""App-lifetime tasks started with serving: the outbox sender, the Paystack client and the
reconciler."""
