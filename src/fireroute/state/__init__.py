"""Durable state: the lease of every VM, in SQLite."""
