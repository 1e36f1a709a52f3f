"""reminderd: durable scheduled callbacks on PostgreSQL."""

__version__ = "0.1.0"
