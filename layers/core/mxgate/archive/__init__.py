"""The archive: every message the rule set's Archive action stores, indexed so operators can
search it, read it, export it, and let it go when its retention runs out. The meaning of a
search is Mail Manager's (`query`); each runtime has its index (`adapters/local/archive.py`:
SQLite FTS5 here; `adapters/aws/archive.py`: Mail Manager's own archive API)."""
