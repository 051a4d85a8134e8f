"""The sandbox's composition root: the template's stack in moto, its ingress points on
loopback, Mail Manager's rule sets acting on the moto-backed stack, and the mailbox hosts.

Where a message goes, as on AWS:

    ingress point (OPEN) --traffic policy--> rule set (the template's, mailmanager/)
        WriteToS3  -> moto S3, then S3's Object Created event to the function EventBridge
                      hands it to (the Start function)
        InvokeLambda -> the template's function, with Mail Manager's event (queued, as Lambda
                      queues an EVENT invocation)
    Start joins the two halves -> the state machine, run by moto's interpreter, each Task the
        real handler (Process, Deliver, ...) against moto's S3, DynamoDB, SQS and SES
    Deliver --SMTP 587, STARTTLS, AUTH--> relay ingress point (AUTH) -> its own rule set
        Relay (MailFrom PRESERVE) --SMTP--> the mailbox host standing in for Workspace or 365

The arrivals of Mail Manager's two halves are held and handed over in the order asked for
(`envelope-first` or `object-first`), so tests can play either.

Addresses, so a provider's view of the hops can be measured: the Deliver function connects
from 127.0.0.1 (standing in for its NAT gateway's Elastic IP), Mail Manager's relays from
127.0.0.2 (standing in for Mail Manager's relay addresses).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

import boto3

from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.local.maildir import WorkMailFolders
from mxgate.adapters.local.state import SqliteState
from mxgate.adapters.local.topics import TopicFiles
from mxgate.authn.check import Authenticator
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.errors import ConfigError, PermanentError
from mxgate.ids import new_message_id
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.bootstrap import build_resolver
from mxgate.local.config import LocalConfig, load_local_config
from mxgate.local.ingress import IngressHandler, ingress_session
from mxgate.local.limits import Defences, SmtpLimits
from mxgate.local.logs import VendedLogs
from mxgate.local.mailbox import mailbox_session
from mxgate.local.rule_set import LocalMailManager
from mxgate.local.rule_set_failures import KEPT_BUCKET, RuleSetFailures
from mxgate.local.setup import routes_of
from mxgate.local.smtp import ExactSMTP
from mxgate.local.spool import Spool, accepted_event
from mxgate.local.tls import ensure_certificate, server_context
from mxgate.mailmanager.actions import ARCHIVE_BUCKET, ActionPorts
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.resources import MailManagerResources, load_mail_manager
from mxgate.mailmanager.template import (
    logical_id_of,
    parameter_values,
    read_samconfig_parameters,
    read_template,
)
from mxgate.message.headers import header_block_end, prepend_headers
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope
from mxgate.routing.recipients import DirectoryAddressBook
from mxgate.routing.routes import Routes
from mxgate.sandbox.mailboxes import MailboxDelivery, RecordingMaildir
from mxgate.sandbox.report import RecipientReport, SendReport, provider_view
from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Function, Stack
from mxgate.workflow.object_created import object_created_event
from mxgate.workflow.received import received_value

log = logging.getLogger("mxgate.sandbox")

DELIVER_EGRESS = "127.0.0.1"  # the Deliver function's fixed egress address, here
RELAY_EGRESS = "127.0.0.2"  # where Mail Manager's relays connect from, here
GATEWAY_ADDRESSES = frozenset({DELIVER_EGRESS, RELAY_EGRESS})
ArrivalOrder = Literal["envelope-first", "object-first"]
QUIET_TIMEOUT = 120.0  # seconds a message may take through the whole stack


@dataclass(frozen=True)
class SandboxOptions:
    home: Path
    config: Path  # local.yaml: template, samconfig, routes, mailbox hosts, relays, DNS
    parameters: Mapping[str, object] = field(default_factory=dict)  # over samconfig.toml's
    arrival_order: ArrivalOrder = "envelope-first"
    primary_port: int = 0  # the first OPEN ingress point's port (0: a free one); others free
    hostname: str = "mxgate.sandbox"
    # called with each report of a message an ingress point took (the listening sandbox)
    on_report: Callable[[SendReport], None] | None = None


def mail_manager_host(ingress_id: str) -> str:
    """The name the sandbox gives an ingress point's servers in Received fields. Mail Manager's
    own naming is *unconfirmed*; the Start function trusts names under `.amazonaws.com`."""
    return f"{ingress_id.lower()}.mail-manager-smtp.{REGION}.amazonaws.com"


@dataclass
class _Arrival:
    half: Literal["envelope", "object"]
    function: Function
    event: dict[str, Any]


class StackFunctions:
    """The Functions port of the sandbox's Mail Manager: the template's function in the stack,
    invoked with its own environment. REQUEST_RESPONSE runs at once; EVENT is queued, as
    Lambda's async queue would hold it, and handed over when the sandbox delivers its arrivals."""

    def __init__(
        self, resources: MailManagerResources, stack: Stack, queue: list[_Arrival]
    ) -> None:
        self.resources = resources
        self.stack = stack
        self.queue = queue

    def _function(self, function_arn: str) -> Function:
        source = self.resources.function(function_arn)
        if source is None or source.logical_id not in self.stack.functions:
            raise PermanentError(f"no Lambda function {function_arn!r} in the stack")
        return self.stack.functions[source.logical_id]

    def check(self, function_arn: str) -> None:
        self._function(function_arn)

    def invoke(self, function_arn: str, event: Callable[[], Mapping[str, Any]]) -> Any:
        function = self._function(function_arn)
        given = event()
        action = given["Records"][0]["ses"]["receipt"]["action"]
        if action.get("invocationType") == "Event":
            self.queue.append(_Arrival("envelope", function, dict(given)))
            return None
        return self.stack.invoke_function(function, given)


class Sandbox:
    """The deployed stack on one machine; use as a context manager."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.home = options.home.resolve()
        self.config: LocalConfig = load_local_config(options.config)
        self.parameters = parameter_values(
            read_template(self.config.template),
            [
                (str(self.config.samconfig), read_samconfig_parameters(self.config.samconfig)),
                ("the sandbox's parameters", options.parameters),
            ],
        )
        self.resources = load_mail_manager(self.config.template, self.parameters)
        self.routes: Routes = routes_of(self.config, self.resources)  # as `mxgate run` reads it
        self.arrivals: list[_Arrival] = []
        self.arrival_order: ArrivalOrder = options.arrival_order  # tests may change it
        self.mailboxes: dict[str, RecordingMaildir] = {}
        self.mailbox_ports: dict[str, int] = {}
        self.listening: dict[str, int] = {}  # ingress point id -> port
        self.handlers: dict[str, IngressHandler] = {}
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._moto: Any = None
        self._function_log: TextIO | None = None
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="sandbox-smtp", daemon=True
        )
        self._transports: list[SmtpTransport] = []  # the emulated Mail Manager's SMTP clients
        self._internal: SqliteState | None = None
        self._servers: list[asyncio.Server] = []
        self._sessions: weakref.WeakSet[ExactSMTP] = weakref.WeakSet()  # the servers' open ones
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail-manager")
        self.clock = SystemClock()
        self._sfn: Any = None  # the Step Functions client quiet() polls with (made in start)

    # ----------------------------------------------------------------------- start, stop

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        from moto import mock_aws  # noqa: PLC0415 -- the sandbox extra, loaded when used

        self._moto = mock_aws(config=MOTO_CONFIG)
        self._moto.start()
        self._loop_thread.start()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self._function_log = (self.home / "logs" / "functions.log").open("a", encoding="utf-8")
        self.stack = Stack.create(
            self.config.template,
            self.config.samconfig,
            parameters=self.parameters,
            attributes={
                (ingress_id, "ARecord"): DELIVER_EGRESS  # the sandbox's listeners
                for ingress_id in self.resources.ingress_points
            },
            # the functions read the sandbox's routes file, as the deployed ones read the
            # routes layer built from it
            environment={**self._dns_environment(), "MXGATE_ROUTES_FILE": str(self.config.routes)},
        )
        self.stack.function_output = self._function_log
        for bucket in (ARCHIVE_BUCKET, KEPT_BUCKET):  # Mail Manager's own stores
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
        self._call(self._start_mailbox_hosts())
        self.mail_manager = self._build_mail_manager()
        self._call(self._start_ingress_points())
        self._point_deliver_at_relay_ingress()
        self.state_machine = self.stack.deploy_state_machine()
        # made now, before any function runs: making a client reads os.environ, which a
        # function running on another thread changes (its own environment) while we poll
        self._sfn = boto3.client("stepfunctions", region_name=REGION)

    def close(self) -> None:
        """Everything started, stopped in order: the work in flight, the SMTP clients (so the
        servers' sessions end with QUIT), the servers, the loop, then moto."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for transport in self._transports:
            transport.close()
        if getattr(self, "stack", None) is not None:
            self.stack.close_clients()
        if self._loop.is_running():
            self._call(self._stop_servers())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()
        if self._internal is not None:
            self._internal.close()
        if getattr(self, "stack", None) is not None:
            self.stack.close()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._function_log is not None:
            self._function_log.close()

    async def _stop_servers(self) -> None:
        """Stop listening, and end the sessions clients keep open (reused connections): a
        session has a task only while a command of it waits."""
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.close()
        sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def _tracked(self, session: Callable[[], ExactSMTP]) -> Callable[[], ExactSMTP]:
        """`session`, each one kept (weakly) for `_stop_servers` to end."""

        def made() -> ExactSMTP:
            made_session = session()
            self._sessions.add(made_session)
            return made_session

        return made

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _dns_environment(self) -> dict[str, str]:
        dns = self.config.dns
        if not dns.nameservers:
            return {}
        return {"MXGATE_DNS_SERVER": f"{dns.nameservers[0]}:{dns.port}"}

    async def _start_mailbox_hosts(self) -> None:
        for host, spec in self.config.mailbox_hosts.items():
            if spec.external:
                self.mailbox_ports[host] = spec.port
                continue
            handler = RecordingMaildir(self.home / "mailboxes", host)
            server = await asyncio.get_running_loop().create_server(
                self._tracked(partial(mailbox_session, handler)), host="127.0.0.1", port=0
            )
            self.mailboxes[host] = handler
            self.mailbox_ports[host] = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def _start_ingress_points(self) -> None:
        cert, key = ensure_certificate(self.home / "tls", self.options.hostname, self.clock.now())
        self.certificate = cert
        tls = server_context(cert, key)
        spool = Spool(self.home / "spool")
        defences = Defences.counting(SmtpLimits(), self.clock)  # the local gateway's defaults
        for ingress_id, point in self.resources.ingress_points.items():
            if point.Type == "MTLS":
                continue  # not emulated
            policy = self.resources.traffic_policy(point)
            handler = IngressHandler(
                ingress_id=ingress_id,
                ingress=point,
                policy=policy,
                book=self.mail_manager.book,
                spool=spool,
                logs=self.mail_manager.logs,
                clock=self.clock,
                submit=self._submit,
                smtp_password=self._password(ingress_id) if point.Type == "AUTH" else None,
            )
            server = await asyncio.get_running_loop().create_server(
                self._tracked(
                    partial(
                        ingress_session,
                        handler,
                        mail_manager_host(ingress_id),
                        tls,
                        policy.max_message_size,
                        defences,
                    )
                ),
                host="127.0.0.1",
                port=self.options.primary_port if ingress_id == self.primary_ingress() else 0,
            )
            self.handlers[ingress_id] = handler
            self.listening[ingress_id] = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    def _password(self, ingress_id: str) -> str:
        settings = self.resources.ingress_points[ingress_id].IngressPointConfiguration
        if settings is not None and settings.SmtpPassword is not None:
            return settings.SmtpPassword
        if settings is None or settings.SecretArn is None:
            raise ConfigError(f"AUTH ingress point {ingress_id} has no password or secret")
        return self.stack.secret(logical_id_of(settings.SecretArn))["password"]

    def _point_deliver_at_relay_ingress(self) -> None:
        """The Deliver function reaches the relay ingress point at its ARecord on 587; here at
        the sandbox's listener, whose self-signed certificate it is given to trust."""
        deliver = self.stack.function_by_code("deliver")
        relay = self._relay_ingress_id()
        if relay is not None:
            deliver.environment["MXGATE_RELAY_PORT"] = str(self.listening[relay])
            deliver.environment["MXGATE_RELAY_CA_FILE"] = str(self.certificate)

    def _relay_ingress_id(self) -> str | None:
        deliver = self.stack.function_by_code("deliver")
        variables = self.stack.resolver.resources[deliver.logical_id].get("Properties") or {}
        host = ((variables.get("Environment") or {}).get("Variables") or {}).get(
            "MXGATE_RELAY_HOST"
        )
        target = host.get("Fn::GetAtt") if isinstance(host, dict) else None
        if not target:
            return None
        return str(target[0] if isinstance(target, list) else str(target).split(".")[0])

    def _build_mail_manager(self) -> LocalMailManager:
        config, clock, home = self.config, self.clock, self.home
        internal = SqliteState(home / "mail-manager.db")  # Mail Manager's own bookkeeping
        self._internal = internal
        timeline = DynamoState(
            boto3.client("dynamodb", region_name=REGION), self.stack.resource("StateTable"), clock
        )
        objects = S3ObjectStore(boto3.client("s3", region_name=REGION))
        transports = {
            host: SmtpTransport(
                SmtpTarget(
                    "127.0.0.1", port, helo=self.options.hostname, source_address=RELAY_EGRESS
                )
            )
            for host, port in self.mailbox_ports.items()
        }
        self._transports += transports.values()
        return LocalMailManager(
            resources=self.resources,
            rule_sets={
                ingress_id: self.resources.rule_set(point)
                for ingress_id, point in self.resources.ingress_points.items()
            },
            book=DirectoryAddressBook(
                FileAddressBook(home / "address-lists"), self.resources, self.routes
            ),
            actions=ActionPorts(
                objects=objects,
                idempotency=internal,
                clock=clock,
                relays={
                    relay_id: transports[host]
                    for relay_id, host in config.relays.items()
                    if relay_id in self.resources.relays
                },
                outbound=transports[config.outbound] if config.outbound else None,
                functions=StackFunctions(self.resources, self.stack, self.arrivals),
                topics=TopicFiles(home / "sns", clock),
                mailboxes=WorkMailFolders(home / "workmail"),
                hostname=self.options.hostname,
                replace_mail_from=config.replace_mail_from
                or f"postmaster@{self.routes.employee_domains[0]}",
            ),
            failures=RuleSetFailures(
                objects=objects,
                timeline=timeline,
                dead_letters=internal,
                deferrals=internal,
                retry_policy=self.routes.delivery,
                clock=clock,
            ),
            logs=VendedLogs(home / "logs"),
            locks=home / "locks",
            authenticator=Authenticator(build_resolver(config.dns), self.options.hostname),
        )

    # ----------------------------------------------------------------------- Mail Manager

    def _object_stored(self, bucket: str, key: str) -> None:
        """WriteToS3 stored an object: S3 announces it, EventBridge hands the event on."""
        size = self.mail_manager.actions.objects.head(bucket, key).size
        event = object_created_event(
            bucket, key, size, self.clock.now(), region=REGION, account=self.stack.resolver.account
        )
        for function in self.stack.event_targets(event):
            self.arrivals.append(_Arrival("object", function, event))

    def _submit(self, path: Path) -> None:
        """An ingress point accepted a message (the spool file is fsynced): Mail Manager's rule
        set runs for it, off the SMTP loop."""
        with self._busy_lock:
            self._busy += 1
        future: Future[Envelope | None] = self._pool.submit(self.take_spooled, path)
        future.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        with self._busy_lock:
            self._busy -= 1

    def take_spooled(self, path: Path) -> Envelope | None:
        try:
            envelope, message = Spool.read(path)
            mail_manager = self.mail_manager
            mail_manager.failures.records.record([accepted_event(path, envelope, message.size)])
            with mail_manager.exclusive(envelope.message_id):
                run = mail_manager.apply_rule_set(envelope, self._as_received(envelope, message))
                for bucket, key in run.stored:
                    self._object_stored(bucket, key)
                mail_manager.retry_open(run, spool_file=path.name)
            self.deliver_arrivals()
            if not run.pending:
                path.unlink(missing_ok=True)
        except Exception:  # the file stays: the message is not lost
            log.exception("rule set failed", extra={"spool_file": path.name})
            return None
        if self.options.on_report is not None and envelope.ingress_point == self.primary_ingress():
            threading.Thread(target=self._report_later, args=(envelope,), daemon=True).start()
        return envelope

    def _report_later(self, envelope: Envelope) -> None:
        assert self.options.on_report is not None
        try:
            self.wait_until_quiet()
            self.options.on_report(self.report(envelope.message_id, envelope.recipients, {}))
        except Exception:
            log.exception("no report", extra={"message_id": envelope.message_id})

    def _as_received(self, envelope: Envelope, message: RawMessage) -> RawMessage:
        """The message with the Received field the ingress point adds (format *unconfirmed*)."""
        by = mail_manager_host(envelope.ingress_point)
        received = received_value(
            envelope, by, envelope.message_id, self.clock.now(), software=None
        )
        return message.with_header(prepend_headers(message.header, [("Received", received)]))

    def deliver_arrivals(self) -> None:
        """Hand the held halves to their functions, in the order asked for: what Lambda's async
        queue and EventBridge do. A half a function refuses is tried again, then kept on the
        function's failure destination, as Lambda and EventBridge keep it."""
        first = "envelope" if self.arrival_order == "envelope-first" else "object"
        while self.arrivals:
            pending, self.arrivals[:] = list(self.arrivals), []
            pending.sort(key=lambda a: a.half != first)
            for arrival in pending:
                self.stack.deliver_event(arrival.function, arrival.event)

    # ----------------------------------------------------------------------- waiting

    def quiet(self) -> bool:
        """Nothing left to do: no held arrival, no rule set running, no execution running."""
        with self._busy_lock:
            busy = self._busy
        if busy or self.arrivals:
            return False
        running = self._sfn.list_executions(
            stateMachineArn=self.state_machine, statusFilter="RUNNING"
        )["executions"]
        return not running

    def wait_until_quiet(self, timeout: float = QUIET_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        settled = 0
        while settled < 3:  # quiet a few looks in a row: an SMTP hand-off may be in flight
            settled = settled + 1 if self.quiet() else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sandbox was still busy after {timeout:.0f}s")
            time.sleep(0.02)

    # ----------------------------------------------------------------------- one message

    def primary_ingress(self) -> str:
        """The first OPEN ingress point: where the domain's MX points."""
        points = self.resources.ingress_points
        return next((i for i, p in points.items() if p.Type == "OPEN"), next(iter(points)))

    def send(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: Sequence[str],
        ip: str = "192.0.2.25",
        helo: str = "mail.sender.example",
        tls_protocol: str | None = "TLS1_3",
        ingress_point: str | None = None,
    ) -> SendReport:
        """One message through the whole stack, as if `ip` (saying `helo`) had sent it over
        SMTP to the ingress point; returns when everything it set off has finished."""
        ingress_id = ingress_point or self.primary_ingress()
        handler = self.handlers[ingress_id]
        now = self.clock.now()
        message_id = new_message_id(now)
        facts = SessionFacts(sender_ip=ip, tls_protocol=tls_protocol)
        refused: dict[str, str] = {}
        if tls_protocol is None and handler.ingress.requires_starttls:
            refused = dict.fromkeys(recipients, "530 5.7.0 Must issue a STARTTLS command first")
        elif len(raw) > handler.policy.max_message_size:
            refused = dict.fromkeys(recipients, "552 5.3.4 Message size exceeds fixed maximum")
        else:
            for recipient in recipients:
                refusal = handler.refusal(recipient, facts, mail_from)
                if refusal is not None:
                    refused[recipient] = refusal
        accepted = [r for r in dict.fromkeys(recipients) if r not in refused]
        if accepted:
            envelope = Envelope(
                message_id=message_id,
                mail_from=mail_from,
                recipients=accepted,
                helo=helo,
                source_ip=ip,
                tls_protocol=tls_protocol,
                received_at=now.isoformat(),
                ingress_point=ingress_id,
            )
            writer = handler.spool.receive(envelope)
            writer.write(raw)
            path = handler.accept(writer, now)
            with self._busy_lock:
                self._busy += 1
            try:
                self.take_spooled(path)
            finally:
                with self._busy_lock:
                    self._busy -= 1
            self.wait_until_quiet()
        return self.report(message_id, recipients, refused)

    def report(
        self, message_id: str, recipients: Sequence[str], refused: Mapping[str, str]
    ) -> SendReport:
        states = {
            s.recipient.casefold(): s
            for s in self.mail_manager.failures.timeline.states(message_id)
        }
        events = self.mail_manager.failures.timeline.events(message_id)
        deliveries = self._deliveries_of(message_id)
        authenticator = Authenticator(build_resolver(self.config.dns), "provider.mailbox.local")
        report = SendReport(message_id=message_id)
        listed = [*dict.fromkeys(recipients)]
        listed += [
            s.recipient for k, s in states.items() if k not in {r.casefold() for r in listed}
        ]
        for recipient in listed:
            if recipient in refused:
                report.recipients.append(
                    RecipientReport(
                        recipient=recipient, outcome="refused", detail=refused[recipient]
                    )
                )
                continue
            state = states.get(recipient.casefold())
            if state is None:
                last = [
                    e.detail
                    for e in events
                    if (e.recipient or "").casefold() == recipient.casefold()
                ]
                report.recipients.append(
                    RecipientReport(
                        recipient=recipient, outcome="pending", detail=last[-1] if last else ""
                    )
                )
                continue
            entry = RecipientReport(
                recipient=recipient,
                outcome=state.outcome.value,
                route=state.route,
                detail=state.detail,
            )
            delivery = deliveries.get(recipient.casefold())
            if delivery is not None:
                raw = delivery.path.read_bytes()
                hops, view = provider_view(delivery, raw, GATEWAY_ADDRESSES, authenticator)
                entry = entry.model_copy(
                    update={
                        "mail_from": delivery.mail_from,
                        "rcpt_to": list(delivery.rcpt_to),
                        "path": str(delivery.path),
                        "mailbox_host": delivery.host,
                        "received": hops,
                        "provider": view,
                    }
                )
            report.recipients.append(entry)
        return report

    def _deliveries_of(self, message_id: str) -> dict[str, MailboxDelivery]:
        """What the mailbox hosts stored of this message: files whose Received fields carry
        its id (the ingress point's and the pipeline's fields both do)."""
        marker = f" id {message_id};".encode()
        found: dict[str, MailboxDelivery] = {}
        for mailbox in self.mailboxes.values():
            for delivery in mailbox.deliveries:
                head = delivery.path.read_bytes()
                if marker in head[: header_block_end(head)]:
                    found.setdefault(delivery.recipient.casefold(), delivery)
        return found
