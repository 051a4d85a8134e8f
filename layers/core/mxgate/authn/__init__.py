"""Who really sent a message: SPF, DKIM and DMARC, and the Authentication-Results header."""
