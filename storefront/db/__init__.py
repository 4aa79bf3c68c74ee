"""The database layer: engine and sessions, errors, transactions and turns, the SQLite writer.

Import each name from the module that defines it."""
