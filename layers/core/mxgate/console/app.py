"""The console's pages, over one Desk (this machine's stores, or the deployed stack's):
recent mail with outcome badges (refreshed live), a message's timeline, archive search, the
quarantine with release and delete, dead letters with redrive, and the local mailbox hosts'
Maildirs read as a mail client shows them."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mxgate.adapters.local.maildir import recipient_of
from mxgate.archive.query import ArchiveQuery, query_terms
from mxgate.console.mailboxes import Maildirs
from mxgate.console.security import CsrfRefused, TokenGate, checked_form, csrf_token
from mxgate.desk import Desk, delete_message, redrive_one, release_message
from mxgate.errors import MxgateError
from mxgate.local.spool import message_events
from mxgate.message.parse import parse_message
from mxgate.moment import moment
from mxgate.records import Stage
from mxgate.tracking import TraceQuery, track
from mxgate.workflow.quarantine import find

RECENT = 50
BADGES = {
    "delivered": "ok",
    "handed_to_app": "ok",
    "quarantined": "warn",
    "dropped": "muted",
    "bounced": "bad",
    "dead_lettered": "bad",
}


class Console:
    """The pages, each a method; `create_app` routes to them."""

    def __init__(self, desk: Desk, token: str) -> None:
        self.desk = desk
        self.templates = Environment(
            loader=PackageLoader("mxgate.console", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.templates.filters["recipient"] = recipient_of  # a mailbox's name, as its address
        self.csrf = csrf_token(token)
        self.token = token
        self.maildirs = Maildirs(desk.mailboxes) if desk.mailboxes is not None else None

    def page(
        self, template: str, request: Request, status: int = 200, **context: Any
    ) -> HTMLResponse:
        body = self.templates.get_template(template).render(
            request=request,
            csrf=self.csrf,
            where=self.desk.where,
            aws=self.desk.aws,
            mailboxes=self.maildirs is not None,
            badges=BADGES,
            notice=request.query_params.get("notice", ""),
            **context,
        )
        return HTMLResponse(body, status_code=status)

    async def form(self, request: Request) -> FormData:
        """The posted form; refused (CsrfRefused: 403) without this session's CSRF token."""
        return await checked_form(request, self.token)

    async def call(self, function: Any, *args: Any) -> Any:
        return await run_in_threadpool(function, *args)

    def recent_rows(self) -> list[dict[str, Any]]:
        """The newest parsed messages, with each recipient's outcome so far."""
        return [
            {
                "message_id": m.message_id,
                "at": m.parsed_at,
                "subject": m.subject,
                "sender": m.envelope_sender,
                "recipients": m.recipients,
                "outcomes": Counter(m.outcomes.values()),
                "in_progress": m.in_progress,
            }
            for m in track(self.desk.messages, self.desk.timeline, TraceQuery(limit=RECENT))
        ]

    async def recent(self, request: Request) -> Response:
        rows = await self.call(self.recent_rows)
        fragment = request.query_params.get("fragment") == "1"
        return self.page("recent_rows.html" if fragment else "recent.html", request, rows=rows)

    async def message(self, request: Request) -> Response:
        message_id = request.path_params["message_id"]
        events = await self.call(message_events, self.desk.timeline, self.desk.spool, message_id)
        states = await self.call(self.desk.timeline.states, message_id)
        if not events and not states:
            return self.page("missing.html", request, 404, what=f"message {message_id}")
        return self.page(
            "message.html",
            request,
            message_id=message_id,
            events=events,
            states=states,
            verdicts=[e for e in events if e.stage in (Stage.PARSED, Stage.AUTHENTICATED)],
            rules=[e for e in events if e.stage in (Stage.RULES, Stage.RETRY)],
            deliveries=[
                e
                for e in events
                if e.stage
                in (Stage.ATTEMPT, Stage.DEFERRED, Stage.REDRIVEN, Stage.RELEASED, Stage.TERMINAL)
            ],
        )

    async def archive(self, request: Request) -> Response:
        text = request.query_params.get("q", "")
        error = ""
        found: list[Any] = []
        searched = "q" in request.query_params
        if searched:
            try:
                terms = query_terms(text)
                for name in ("since", "until"):
                    if isinstance(terms.get(name), str):
                        terms[name] = moment(terms[name], self.desk.clock.now())
                query = ArchiveQuery.model_validate({**terms, "limit": 200})
                found = await self.call(self.desk.archive.search, query)
            except (ValueError, MxgateError) as problem:
                error = str(problem)
        return self.page(
            "archive.html", request, q=text, found=found, error=error, searched=searched
        )

    async def archived(self, request: Request) -> Response:
        archived_id = request.path_params["archived_id"]
        found = await self.call(self.desk.archive.get, archived_id)
        if found is None:
            return self.page("missing.html", request, 404, what=f"archived message {archived_id}")
        raw = await self.call(self.desk.archive.raw, archived_id)
        return self.page(
            "archived.html", request, row=found, parsed=parse_message(raw), size=len(raw)
        )

    async def quarantine(self, request: Request) -> Response:
        records = await self.call(lambda: list(self.desk.quarantine.records()))
        return self.page("quarantine.html", request, records=records)

    async def quarantined(self, request: Request) -> Response:
        try:
            record = await self.call(
                find, self.desk.quarantine, request.path_params["quarantine_id"]
            )
        except MxgateError:
            return self.page("missing.html", request, 404, what="quarantined message")
        try:
            raw = await self.call(self.desk.objects.get, record.message.bucket, record.message.key)
            parsed = parse_message(raw)
        except MxgateError:
            parsed = None
        return self.page("quarantined.html", request, record=record, parsed=parsed)

    async def release(self, request: Request) -> Response:
        form = await self.form(request)
        to = str(form.get("to") or "").strip() or None
        quarantine_id = request.path_params["quarantine_id"]
        try:
            report = await self.call(release_message, self.desk, quarantine_id, to)
        except MxgateError as problem:
            return _back(f"/quarantine/{quarantine_id}", f"not released: {problem}")
        if not report["released"]:
            return _back(f"/quarantine/{quarantine_id}", "nothing to release: released already")
        released = ", ".join(report["released"])
        return _back(
            f"/quarantine/{quarantine_id}", f"released to {released}; {self.desk.after_queue}"
        )

    async def delete(self, request: Request) -> Response:
        await self.form(request)
        try:
            record = await self.call(
                delete_message, self.desk, request.path_params["quarantine_id"]
            )
        except MxgateError as problem:
            return _back("/quarantine", f"not deleted: {problem}")
        return _back("/quarantine", f"deleted {record.quarantine_id}")

    async def dead_letters(self, request: Request) -> Response:
        rows = await self.call(lambda: sorted(self.desk.dead_letters.list(), key=lambda r: r.at))
        return self.page("dead_letters.html", request, rows=rows)

    async def redrive(self, request: Request) -> Response:
        await self.form(request)
        record_id = request.path_params["record_id"]
        try:
            report = await self.call(partial(redrive_one, self.desk, record_id, aws=self.desk.aws))
        except MxgateError as problem:
            return _back("/dead-letters", f"not redriven: {problem}")
        if self.desk.forget_notices is not None:
            await self.call(self.desk.forget_notices, {record_id})
        count = len(report["recipients"])
        return _back(
            "/dead-letters",
            f"redriven {record_id}: {count} recipient(s) queued; {self.desk.after_queue}",
        )

    async def mailbox_hosts(self, request: Request) -> Response:
        if self.maildirs is None:
            return self.page("missing.html", request, 404, what="local mailboxes (not on AWS)")
        return self.page("mailboxes.html", request, hosts=await self.call(self.maildirs.hosts))

    async def mailbox(self, request: Request) -> Response:
        if self.maildirs is None:
            return self.page("missing.html", request, 404, what="local mailboxes (not on AWS)")
        host, recipient = request.path_params["host"], request.path_params["recipient"]
        letters = await self.call(self.maildirs.letters, host, recipient)
        if letters is None:
            what = f"mailbox {recipient_of(recipient)} on {host}"
            return self.page("missing.html", request, 404, what=what)
        return self.page("mailbox.html", request, host=host, recipient=recipient, letters=letters)

    async def letter(self, request: Request) -> Response:
        if self.maildirs is None:
            return self.page("missing.html", request, 404, what="local mailboxes (not on AWS)")
        params = request.path_params
        found = await self.call(
            self.maildirs.letter, params["host"], params["recipient"], params["name"]
        )
        if found is None:
            return self.page("missing.html", request, 404, what="message")
        return self.page(
            "letter.html", request, host=params["host"], recipient=params["recipient"], **found
        )

    async def attachment(self, request: Request) -> Response:
        if self.maildirs is None:
            return self.page("missing.html", request, 404, what="local mailboxes (not on AWS)")
        params = request.path_params
        found = await self.call(
            self.maildirs.attachment,
            params["host"],
            params["recipient"],
            params["name"],
            int(params["number"]),
        )
        if found is None:
            return self.page("missing.html", request, 404, what="attachment")
        filename, content = found
        return Response(
            content,
            media_type="application/octet-stream",  # never rendered by the browser
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"console.css": "text/css", "console.js": "text/javascript"}
        if name not in kinds:
            return Response(status_code=404)
        body = resources.files("mxgate.console").joinpath("static", name).read_bytes()
        return Response(body, media_type=kinds[name], headers={"Cache-Control": "no-cache"})


def create_app(desk: Desk, token: str) -> Starlette:
    console = Console(desk, token)
    routes = [
        Route("/", console.recent),
        Route("/messages/{message_id}", console.message),
        Route("/archive", console.archive),
        Route("/archive/{archived_id}", console.archived),
        Route("/quarantine", console.quarantine),
        Route("/quarantine/{quarantine_id}", console.quarantined),
        Route("/quarantine/{quarantine_id}/release", console.release, methods=["POST"]),
        Route("/quarantine/{quarantine_id}/delete", console.delete, methods=["POST"]),
        Route("/dead-letters", console.dead_letters),
        Route("/dead-letters/{record_id}/redrive", console.redrive, methods=["POST"]),
        Route("/mailboxes", console.mailbox_hosts),
        Route("/mailboxes/{host}/{recipient}", console.mailbox),
        Route("/mailboxes/{host}/{recipient}/{name}", console.letter),
        Route("/mailboxes/{host}/{recipient}/{name}/attachments/{number:int}", console.attachment),
        Route("/static/{name}", console.static),
    ]
    app = Starlette(routes=routes, exception_handlers={CsrfRefused: _csrf_refused})
    app.add_middleware(TokenGate, token=token)
    return app


async def _csrf_refused(request: Request, error: Exception) -> Response:
    return PlainTextResponse("403 Forbidden: bad CSRF token\n", status_code=403)


def _back(path: str, notice: str) -> RedirectResponse:
    """Post/redirect/get: the result shows on the page, a reload repeats nothing."""
    from urllib.parse import urlencode  # noqa: PLC0415

    return RedirectResponse(f"{path}?{urlencode({'notice': notice})}", status_code=303)


def serve(app: Starlette, host: str, port: int, on_ready: Any) -> None:
    """uvicorn on host:port until Ctrl-C; `on_ready(port)` once it listens."""
    import uvicorn  # noqa: PLC0415 -- only when serving

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        sockets = [s for srv in server.servers for s in srv.sockets]
        on_ready(sockets[0].getsockname()[1] if sockets else port)
        await task

    asyncio.run(run())
