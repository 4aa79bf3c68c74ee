"""Mail: the message as sent (message), and the transports that send it (transports).

Import each name from the module that defines it."""
