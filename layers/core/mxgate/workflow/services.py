"""The ports the workflow steps use, gathered by each runtime's composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from mxgate.ports import (
    AppEvents,
    Clock,
    DeadLetters,
    Deferrals,
    Hooks,
    Idempotency,
    ObjectStore,
    Quarantine,
    Resolver,
    Timeline,
    Transport,
    Webhooks,
)
from mxgate.recorder import Recorder
from mxgate.routing.routes import Routes

if TYPE_CHECKING:
    from mxgate.authn.arc import Sealer
    from mxgate.authn.check import Authenticator
    from mxgate.message.model import ParseLimits
    from mxgate.message.parse import ParseOnce

REMEMBERED_CHECKS = 32  # messages whose verdicts the authenticator keeps (Authenticator)
REUSED_CHECKS = 1024  # SPF and DMARC results kept by their inputs (while the DNS cache holds)


@dataclass(frozen=True)
class Services:
    objects: ObjectStore
    timeline: Timeline
    idempotency: Idempotency
    transports: Mapping[str, Transport]  # by mailbox host name, as in the routes' destinations
    app_events: AppEvents
    dead_letters: DeadLetters
    routes: Routes
    clock: Clock
    # names this gateway in trace header fields, and is its authserv-id in
    # Authentication-Results
    gateway_host: str = "mxgate.local"
    # the deployment's secret for loop tokens (routing/loops.py); None: no tokens here
    loop_key: bytes | None = None
    resolver: Resolver | None = None  # DNS for sender authentication; None: not checked
    sealer: Sealer | None = None  # ARC-seals mailbox deliveries as the gateway; None: no seal
    # what one message may hold; None: the parser's defaults (the parsing steps' alone import
    # its models)
    message_limits: ParseLimits | None = None
    # the rule set's parse of the message in this worker run, if any (the local runtime's)
    parses: ParseOnce | None = None
    # delivery beyond the first attempts: without these, deferral, DSNs and hooks are off
    deferrals: Deferrals | None = None  # the deferred queue
    bounces: Transport | None = None  # sends DSNs to envelope senders
    hooks: Hooks | None = None
    webhooks: Webhooks | None = None
    # quarantine records for operators (without: quarantined recipients are only settled)
    quarantine: Quarantine | None = None
    quarantine_days: int = 30  # how long quarantined mail is kept (RawMailRetentionDays)

    @cached_property
    def authenticator(self) -> Authenticator | None:
        """Sender authentication through the resolver (None: not checked). The local rule set
        shares it, so the Process step does not check a message the rules checked already."""
        if self.resolver is None:
            return None
        from mxgate.authn.check import Authenticator  # noqa: PLC0415 -- cold start of Deliver

        return Authenticator(
            self.resolver,
            self.gateway_host,
            clock=self.clock,
            sealer=self.sealer,
            remember=REMEMBERED_CHECKS,
            reuse=REUSED_CHECKS,
        )

    @property
    def records(self) -> Recorder:
        """Writes the timeline and terminal states, stamped by this clock."""
        return Recorder(self.timeline, self.clock)
