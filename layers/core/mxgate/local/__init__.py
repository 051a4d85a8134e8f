"""The one-machine runtime: SMTP ingress, the Mail Manager emulator, the workflow runner and
local mailbox hosts, all wired from one composition root (runtime.py)."""
