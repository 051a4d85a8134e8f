"""The subdomains that passed `mxgate check --send-test`, kept under $MXGATE_HOME so a later
check of the parent domain knows a test subdomain was tried first (the seed's advice)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from mxgate.adapters.local.files import write_atomically

TRIALS_FILE = "cutover-trials.json"


def _trials_path(home: Path) -> Path:
    return home / TRIALS_FILE


def _read_trials(home: Path) -> list[dict[str, str]]:
    try:
        trials = json.loads(_trials_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [t for t in trials if isinstance(t, dict)] if isinstance(trials, list) else []


def tried(home: Path, domain: str) -> list[str]:
    """The subdomains of `domain` whose --send-test passed, oldest first."""
    return [
        f"{t['domain']} at {t.get('at', '?')}"
        for t in _read_trials(home)
        if str(t.get("domain", "")).endswith(f".{domain}")
    ]


def remember_trial(home: Path, domain: str, message_id: str, at: datetime) -> None:
    trials = _read_trials(home)
    trials.append(
        {
            "domain": domain,
            "at": at.isoformat(timespec="seconds"),
            "message_id": message_id,
        }
    )
    write_atomically(_trials_path(home), json.dumps(trials[-100:], indent=2).encode())
