"""SES on loopback for tests: a moto server, and in front of it an HTTP endpoint that answers
SES's throttling error to the first N SendEmail calls before passing calls through."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class SesEndpoint:
    moto_url: str
    url: str = ""
    throttle: int = 0  # SendEmail calls still to refuse with TooManyRequestsException
    throttled: int = 0
    passed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self) -> list[dict[str, Any]]:
        """What moto's SES backend holds: one entry per accepted SendEmail (raw)."""
        with urllib.request.urlopen(f"{self.moto_url}/moto-api/data.json", timeout=10) as reply:
            data: dict[str, Any] = json.load(reply)
        return list(data["ses"]["RawMessage"])

    def reset(self) -> None:
        """moto's backends live in the process: start each use from nothing."""
        request = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def verify(self, identity: str) -> None:
        boto3.client(
            "sesv2",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_email_identity(EmailIdentity=identity)


def _handler(state: SesEndpoint) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.command == "POST" and self.path.startswith(SEND_EMAIL_PATH):
                with state.lock:
                    refuse = state.throttle > 0
                    if refuse:
                        state.throttle -= 1
                        state.throttled += 1
                    else:
                        state.passed += 1
                if refuse:  # SES's own answer when the sending rate is exceeded
                    payload = json.dumps({"message": "Maximum sending rate exceeded."}).encode()
                    self.send_response(429)
                    self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            request = urllib.request.Request(
                state.moto_url + self.path, data=body, method=self.command, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    status, reply_headers, content = reply.status, reply.headers, reply.read()
            except urllib.error.HTTPError as error:
                status, reply_headers, content = error.code, error.headers, error.read()
            self.send_response(status)
            for name, value in reply_headers.items():
                if name.lower() not in {
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "server",
                    "date",
                }:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    return Proxy


@contextmanager
def ses_endpoint() -> Iterator[SesEndpoint]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    state = SesEndpoint(moto_url=f"http://{host}:{port}")
    state.reset()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        yield state
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
        moto.stop()
