"""Understanding a message: the parsed model, and edits to the raw bytes that keep DKIM intact."""
