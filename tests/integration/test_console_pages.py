"""The console's pages on this machine's desk, the app called in-process through httpx's ASGI
transport (no socket): what they show of a message between `250` and a worker taking it, and
after."""

from __future__ import annotations

import asyncio

import httpx

from mxgate.console.app import create_app
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.pipeline import receive_spooled
from tests.worker_harness import RAW, accept


def message_page(app: object, message_id: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", follow_redirects=True
        ) as client:  # the token sets a cookie and redirects to the page without it
            return await client.get(f"/messages/{message_id}", params={"token": "secret"})

    return asyncio.run(get())


def test_the_message_page_shows_a_message_no_worker_has_taken_yet(worker):
    assert receive_spooled(worker, accept(worker, "01EARLIER", ["bob@nutrition.co"])) == "done"
    path = accept(worker, "01WAITING", ["alice@nutrition.co"])
    app = create_app(Bootstrap(worker.setup.settings).desk(), "secret")
    page = message_page(app, "01WAITING")
    assert page.status_code == 200
    accepted = f"{len(RAW)} bytes from 192.0.2.1 for 1 recipient(s)"
    assert accepted in page.text
    assert "None settled yet (in progress)." in page.text
    assert message_page(app, "01NOSUCH").status_code == 404

    assert receive_spooled(worker, path) == "done"  # taken: from the timeline now
    page = message_page(app, "01WAITING")
    assert page.text.count(accepted) == 1
    assert "delivered" in page.text
