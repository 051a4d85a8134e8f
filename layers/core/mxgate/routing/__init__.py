"""Routes: who lives on which mailbox host, which application owns which address."""
