"""Unit tests run with the network switched off: a pure part that opens a socket is a bug."""

from __future__ import annotations

import socket

import pytest


class _NoNetwork(socket.socket):
    def connect(self, *args: object) -> None:
        raise RuntimeError("unit tests must not open network connections")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", _NoNetwork)
