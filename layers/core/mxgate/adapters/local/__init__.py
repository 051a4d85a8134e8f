"""Local adapters: files, SQLite and loopback SMTP."""
