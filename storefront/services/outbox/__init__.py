"""The transactional email outbox: compose and queue in the caller's transaction, then claim,
send, retry; the backlog for admins and /readyz.

Import each name from the module that defines it."""
