"""Delivery: transports that hand a message to a mailbox host, and their error taxonomy."""
