"""Application delivery: the event with object-store references, the signed webhook (a real
HTTP server on loopback), post-ingress hooks (a real command), and quarantine rules."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mxgate.adapters.local.hooks import LocalHooks
from mxgate.delivery.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignedPoster,
    verify,
)
from tests.delivery_harness import message, routes_with
from tests.fakes import ManualClock

KEY = b"orders-webhook-key"


def from_uri(uri: str) -> Path:
    """The file behind a local object link (a file URI, percent-encoded)."""
    return Path(unquote(urlsplit(uri).path))


ORDER = (
    b"From: Buyer <buyer@shop.example>\r\nTo: orders@customer-support.nutrition.co\r\n"
    b"Subject: order 77\r\nMessage-ID: <order-77@shop.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    b"Two boxes, please.\r\n--b\r\nContent-Type: text/csv\r\n"
    b'Content-Disposition: attachment; filename="order.csv"\r\n\r\nsku,qty\r\nBOX,2\r\n--b--\r\n'
)


@dataclass
class Endpoint:
    """An HTTP endpoint on loopback that records requests and answers from a script."""

    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((dict(self.headers), body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/mail"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_app_event_carries_the_parsed_message_and_object_references(benches):
    bench = benches()
    message_id = bench.store(ORDER, ["orders@customer-support.nutrition.co"])
    bench.run(message_id)
    assert bench.outcomes(message_id) == {"orders@customer-support.nutrition.co": "handed_to_app"}
    (event_file,) = (bench.home / "events" / "orders").glob("*.json")
    event = json.loads(event_file.read_text())
    assert event["version"] == "1"
    assert event["app"] == "orders"
    assert event["recipient"] == "orders@customer-support.nutrition.co"
    assert event["message"]["subject"] == "order 77"
    assert event["message"]["from"] == [
        {"name": "Buyer", "address": "buyer@shop.example", "ascii_domain": "shop.example"}
    ]
    assert event["raw_object"] == {"bucket": "mxgate-raw", "key": f"raw/{message_id}"}
    (attachment,) = event["message"]["attachments"]
    assert attachment["filename"] == "order.csv"
    assert attachment["object"]["key"] == f"attachments/{attachment['sha256']}"
    stored = from_uri(attachment["url"]).read_bytes()
    assert stored == b"sku,qty\r\nBOX,2"  # the CRLF before a boundary belongs to it
    assert len(stored) == attachment["size"]
    assert "truncated" not in event


def test_an_event_too_large_for_eventbridge_points_to_the_stored_whole(benches):
    bench = benches()
    body = "line of a very long order\r\n" * 20_000  # ~560 KB of text
    raw = message("orders@customer-support.nutrition.co", "huge order", body)
    message_id = bench.store(raw, ["orders@customer-support.nutrition.co"])
    bench.run(message_id)
    (event_file,) = (bench.home / "events" / "orders").glob("*.json")
    event = json.loads(event_file.read_text())
    assert len(event_file.read_bytes()) < 256_000
    assert event["truncated"] is True
    assert "text" not in event["message"]
    whole = json.loads(from_uri(event["full_event"]["url"]).read_text())
    assert whole["message"]["text"].startswith("line of a very long order")


def webhook_routes(url: str):
    return routes_with(
        apps={
            "orders": {
                "addresses": ["orders@customer-support.nutrition.co"],
                "webhook": {"url": url, "secret_env": "ORDERS_KEY", "timeout": 5},
            },
            "returns": {"addresses": ["returns@customer-support.nutrition.co"]},
        }
    )


def test_signed_webhook_is_retried_on_503_and_verifiable(benches, endpoint):
    clock = ManualClock()
    bench = benches(webhook_routes(endpoint.url), webhooks=SignedPoster({"ORDERS_KEY": KEY}, clock))
    endpoint.answers = [503, 200]
    message_id = bench.store(ORDER, ["orders@customer-support.nutrition.co"])
    bench.run(message_id)
    assert len(endpoint.requests) == 2  # a 503, retried by the state machine, then 200
    headers, body = endpoint.requests[-1]
    assert verify(KEY, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify(b"wrong key", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert headers[EVENT_ID_HEADER] == f"{message_id}.orders@customer-support.nutrition.co"
    assert endpoint.requests[0][0][EVENT_ID_HEADER] == headers[EVENT_ID_HEADER]  # same id
    event = json.loads(body)
    assert event["app"] == "orders"
    assert event["message"]["subject"] == "order 77"
    # the app's event was published once, whatever the webhook did
    assert len(list((bench.home / "events" / "orders").glob("*.json"))) == 1
    assert bench.outcomes(message_id) == {"orders@customer-support.nutrition.co": "handed_to_app"}
    bench.run(message_id)  # a duplicate event: the webhook is not called again
    assert len(endpoint.requests) == 2


def test_webhook_refused_for_good_is_dead_lettered_without_touching_the_recipient(
    benches, endpoint
):
    bench = benches(
        webhook_routes(endpoint.url), webhooks=SignedPoster({"ORDERS_KEY": KEY}, ManualClock())
    )
    endpoint.answers = [410]
    message_id = bench.store(ORDER, ["orders@customer-support.nutrition.co"])
    bench.run(message_id)
    assert len(endpoint.requests) == 1  # permanent: no retry
    (record,) = list(bench.state.list())
    record_id = record.record_id
    assert record.kind == "webhook"
    assert "HTTP 410" in record.reason
    assert record_id == f"{message_id}.orders.webhook.0"
    assert bench.outcomes(message_id) == {"orders@customer-support.nutrition.co": "handed_to_app"}


HOOK = """
import json, pathlib, sys
event = json.load(sys.stdin)
out = pathlib.Path(sys.argv[1])
calls = len(list(out.glob("call-*.json")))
(out / f"call-{calls}.json").write_text(json.dumps(event))
sys.exit(75 if calls == 0 else 0)  # the first call asks to be called again
"""


def test_post_ingress_hook_command_is_retried_and_sees_the_message(benches, tmp_path):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    calls = tmp_path / "calls"
    calls.mkdir()
    routes = routes_with(
        hooks={"audit": {"command": [sys.executable, str(script), str(calls)], "timeout": 20}},
        destinations={
            "workspace": {
                "routing_domain": "nutrition.co.test-google-a.com",
                "hooks": ["audit"],
            },
            "m365": {"routing_domain": "nutritionco.mail.onmicrosoft.com"},
        },
    )
    hooks = LocalHooks(routes.hooks, SignedPoster({}, ManualClock()), tmp_path)
    bench = benches(routes, hooks=hooks)
    message_id = bench.store(
        message("alice@nutrition.co, carol@nutrition.co", "hooked"),
        ["alice@nutrition.co", "carol@nutrition.co"],
    )
    bench.run(message_id)
    runs = sorted(calls.glob("call-*.json"))
    assert len(runs) == 2  # exit 75, retried, then 0
    event = json.loads(runs[-1].read_text())
    assert event["hook"] == "audit"
    assert event["route"] == "workspace"
    assert event["recipients"] == ["alice@nutrition.co"]  # only the route's recipients
    assert event["message"]["subject"] == "hooked"
    assert bench.outcomes(message_id) == {
        "alice@nutrition.co": "delivered",
        "carol@nutrition.co": "delivered",
    }
    assert any("hook audit: exit 0" in e.detail for e in bench.state.events(message_id))


def test_quarantine_rule_holds_an_executable_attachment(benches):
    bench = benches()
    raw = ORDER.replace(b"order.csv", b"order.csv.exe").replace(
        b"orders@customer-support", b"alice@nutrition"
    )
    message_id = bench.store(raw, ["alice@nutrition.co", "orders@customer-support.nutrition.co"])
    bench.run(message_id)
    states = {s.recipient: s for s in bench.state.states(message_id)}
    held = states["alice@nutrition.co"]
    assert held.outcome.value == "quarantined"
    assert held.route == "quarantine:executable-attachment"
    assert "order.csv.exe" in held.detail
    assert states["orders@customer-support.nutrition.co"].outcome.value == "quarantined"
    assert bench.received("workspace", "alice@nutrition.co") == []
