"""The composition root of the one-machine runtime: every adapter of the local gateway is built
here, from the typed settings and the checked setup (`local/setup.py`), with one clock. The
server (`local/server.py`), the worker processes (`local/worker.py`) and the commands
(`cli/`) all build what they use from a Bootstrap; tests pass their own clock.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.archive import SqliteArchive
from mxgate.adapters.local.hooks import LocalHooks
from mxgate.adapters.local.maildir import WorkMailFolders
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.quarantine import SqliteQuarantine
from mxgate.adapters.local.state import SqliteState
from mxgate.adapters.local.topics import TopicFiles
from mxgate.authn.arc import Sealer, load_sealer
from mxgate.authn.check import Authenticator
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport, submission_or_deferral
from mxgate.delivery.webhook import SignedPoster, signing_keys
from mxgate.desk import Desk
from mxgate.errors import ConfigError
from mxgate.local.addons import SessionAddons, analyzers
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.config import DnsConfig, SesEndpoint, load_config
from mxgate.local.history import History
from mxgate.local.lambdas import LocalLambdas
from mxgate.local.logs import VendedLogs
from mxgate.local.rule_set import LocalMailManager
from mxgate.local.rule_set_failures import RuleSetFailures
from mxgate.local.settings import LocalSettings, Paths
from mxgate.local.setup import (
    LocalSetup,
    archive_retentions,
    load_mail_manager_config,
    load_setup,
    quarantine_days,
    routes_of,
    state_paths,
)
from mxgate.local.spool import Spool
from mxgate.local.spool_quarantine import adopt_earlier_quarantine
from mxgate.local.workflow import LocalWorkflow
from mxgate.mailmanager.actions import ActionPorts
from mxgate.mailmanager.dnsbl import DnsblAnalyzer
from mxgate.mailmanager.models import TrafficPolicy
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.message.parse import ParseOnce
from mxgate.ports import Clock, Transport
from mxgate.recorder import Recorder
from mxgate.routing.recipients import DirectoryAddressBook
from mxgate.workflow.quarantine import purge as purge_quarantine
from mxgate.workflow.services import Services

DEFAULT_DB_WAIT = 30.0  # seconds a process waits for another one's write to the state database
# A worker's connections checkpoint the WAL themselves only past this many pages (32 MB):
# `mxgate run` checkpoints for them (`local/server.py` CHECKPOINT_EVERY), so a worker no longer
# stalls on a checkpoint's copy and fsyncs every 1000 pages (a few dozen messages); this is the
# backstop of a worker run without it.
WORKER_CHECKPOINT_PAGES = 8000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_resolver(config: DnsConfig) -> CachingResolver:
    """DNS for sender authentication, cached for the records' TTLs."""
    return CachingResolver(DnsPythonResolver(config.nameservers, config.port, config.timeout))


LOOP_SECRET = "LoopTokenSecret"  # noqa: S105 -- the name of the template's secret, not a secret


def loop_key(setup: LocalSetup) -> bytes:
    """The loop guard's key here: the template's secret as `secrets:` gives it, else one made
    for this home on first use (`loop-token.key`, readable by its owner only)."""
    given = setup.config.secret(LOOP_SECRET) or {}
    if given.get("key"):
        return given["key"].encode()
    path = setup.dirs.home / "loop-token.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(f".{path.name}.{os.getpid()}")
        fresh.write_text(secrets.token_hex(32), encoding="ascii")
        fresh.chmod(0o600)
        with contextlib.suppress(FileExistsError):  # another worker made it first: theirs
            os.link(fresh, path)
        fresh.unlink()
    return path.read_text(encoding="ascii").strip().encode()


@dataclass
class Worker:
    """What one worker process needs to take a spooled message through to its end."""

    setup: LocalSetup
    state: SqliteState
    spool: Spool
    objects: FileObjectStore  # the one store of the rule set's actions and the workflow
    mail_manager: LocalMailManager
    workflow: LocalWorkflow
    transports: dict[str, SmtpTransport]
    records: Recorder

    @property
    def clock(self) -> Clock:
        return self.records.clock

    def close(self) -> None:
        """Say QUIT to the mailbox hosts and close the databases (the archive index takes
        the rows this process added into its trigram index first)."""
        for transport in self.transports.values():
            transport.close()
        self.state.close()
        archive = self.mail_manager.actions.archive_index
        if isinstance(archive, SqliteArchive):
            archive.close()


@dataclass
class Bootstrap:
    """Builds the local runtime's parts. Only what a part needs is read: `mxgate trace` opens
    the state database without loading the template."""

    settings: LocalSettings
    clock: Clock = field(default_factory=SystemClock)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)  # secrets by name
    given_setup: LocalSetup | None = None  # already loaded (and adjusted, as `mxgate demo` does)

    @cached_property
    def setup(self) -> LocalSetup:
        return self.given_setup if self.given_setup is not None else load_setup(self.settings)

    @property
    def paths(self) -> Paths:
        return self.settings.paths

    # ----------------------------------------------------------------------- state

    def state(
        self,
        busy_timeout: float = DEFAULT_DB_WAIT,
        before_durable_commit: Callable[[], None] | None = None,
        checkpoint_pages: int = 1000,
    ) -> SqliteState:
        """The timeline, idempotency keys, dead letters and deferred queue (one connection)."""
        return SqliteState(
            self.paths.state_db,
            busy_timeout,
            before_durable_commit,
            checkpoint_pages=checkpoint_pages,
        )

    def objects(self) -> FileObjectStore:
        return FileObjectStore(self.paths.objects)

    def spool(self) -> Spool:
        return Spool(self.paths.spool)

    def history(self, keep_seconds: float = 0) -> History:
        """What `mxgate rules replay` runs again: accepted messages as they were received."""
        return History(self.paths.history, keep_seconds)

    def ingress_spool(self) -> Spool:
        """The spool the ingress writes: each new file also linked into the history."""
        keep = self.setup.config.history.keep
        return Spool(self.paths.spool, self.history(keep).keep if keep > 0 else None)

    def session_addons(self, policy: TrafficPolicy) -> SessionAddons:
        """The DNS blocklists one traffic policy asks during SMTP sessions."""
        return SessionAddons.for_policy(policy, self.setup.config)

    def blocklists(self, *sides: MailManagerResources) -> dict[str, DnsblAnalyzer]:
        """The DNS blocklists standing in for the add-ons these resources' policies ask, for the
        commands that evaluate a policy without a session (rules explain, rules replay)."""
        return analyzers(load_config(self.settings), *sides)

    def authenticator(self) -> Authenticator:
        return Authenticator(self.resolver(), self.settings.hostname, clock=self.clock)

    def address_list_files(self) -> FileAddressBook:
        """The lists `mxgate address-list` edits, one file each."""
        return FileAddressBook(self.paths.address_lists)

    def address_book(self) -> DirectoryAddressBook:
        """What the traffic policy and the rule set look addresses up in."""
        setup = self.setup
        return DirectoryAddressBook(self.address_list_files(), setup.mail_manager, setup.routes)

    def logs(self) -> VendedLogs:
        return VendedLogs(self.paths.logs)

    def resolver(self) -> CachingResolver:
        return build_resolver(self.setup.config.dns)

    def sealer(self) -> Sealer | None:
        """The gateway's ARC sealer when the template's ArcSealKeySecretArn is set: d= and s=
        from ArcSealDomain and ArcSealSelector, the key from that secret's `private_key` under
        `secrets:` (on AWS, from Secrets Manager)."""
        parameters = self.setup.mail_manager.resolver.values
        arn = str(parameters.get("ArcSealKeySecretArn", ""))
        if not arn:
            return None
        secret = self.setup.config.secret(arn) or {}
        if "private_key" not in secret:
            raise ConfigError(
                f"{self.settings.config}: ArcSealKeySecretArn names the secret {arn}; give its "
                "PEM key locally under `secrets:`, as `private_key`"
            )
        return load_sealer(
            str(parameters.get("ArcSealDomain", "")),
            str(parameters.get("ArcSealSelector", "")),
            secret["private_key"],
        )

    def archive(
        self, objects: FileObjectStore | None = None, checkpoint_pages: int = 1000
    ) -> SqliteArchive:
        """The archive's index, over the archived copies in the object store."""
        return SqliteArchive(
            self.paths.archive_db, objects or self.objects(), checkpoint_pages=checkpoint_pages
        )

    # ----------------------------------------------------------------------- transports

    def mailbox_transports(self, ports: Mapping[str, int]) -> dict[str, SmtpTransport]:
        """SMTP to each local mailbox host, on the port it listens on."""
        return {
            host: SmtpTransport(SmtpTarget("127.0.0.1", port, helo=self.settings.hostname))
            for host, port in ports.items()
        }

    def relay_transports(self, mailbox: Mapping[str, Transport]) -> dict[str, Transport]:
        """Each of the template's relays, on this machine: the mailbox host `relays:` maps it
        to, else its own ServerName:ServerPort when that is loopback. Others are left out, and
        a Relay action to them fails with a message that says so."""
        setup = self.setup
        found: dict[str, Transport] = {}
        for relay_id, relay in setup.mail_manager.relays.items():
            host = setup.config.relays.get(relay_id)
            if host is not None:
                found[relay_id] = mailbox[host]
            elif is_loopback(relay.ServerName):
                username = password = None
                if relay.Authentication.SecretArn is not None:
                    secret = setup.config.secret(relay.Authentication.SecretArn) or {}
                    if not {"username", "password"} <= set(secret):
                        raise ConfigError(
                            f"{self.settings.config}: relay {relay_id} authenticates with the "
                            f"secret {relay.Authentication.SecretArn}; give its username and "
                            "password under `secrets:`"
                        )
                    username, password = secret["username"], secret["password"]
                found[relay_id] = SmtpTransport(
                    SmtpTarget(
                        relay.ServerName,
                        relay.ServerPort,
                        starttls=username is not None,  # never send a password in the clear
                        verify_tls=False,  # a local test server's certificate is self-signed
                        username=username,
                        password=password,
                        helo=self.settings.hostname,
                    )
                )
        return found

    def destination_transports(self, hosts: Mapping[str, Transport]) -> dict[str, Transport]:
        """Each routes destination's transport here: a local mailbox host standing in (by
        default), the SES API at a given endpoint, or the destination as routed (SMTP
        submission)."""
        setup = self.setup
        transports: dict[str, Transport] = {}
        for name, local in setup.config.destinations.items():
            destination = setup.routes.destinations[name]
            if isinstance(local, str):
                transports[name] = hosts[local]
            elif isinstance(local, SesEndpoint):
                from mxgate.adapters.aws.bootstrap import ses_transport  # noqa: PLC0415 -- boto3 on demand

                transports[name] = ses_transport(
                    destination.routing_domain, endpoint_url=local.ses_endpoint, region=local.region
                )
            elif destination.transport == "smtp":
                transports[name] = submission_or_deferral(
                    destination, self.environ, self.settings.hostname
                )
            else:
                through = "SES" if destination.transport == "ses" else "the relay ingress point"
                raise ConfigError(
                    f"{self.settings.config}: destinations.{name} is routed through {through}; "
                    "on one machine give it a mailbox host or {ses_endpoint: URL} "
                    "(`mxgate sandbox` runs the AWS path)"
                )
        return transports

    # ----------------------------------------------------------------------- the worker

    def worker(self, mailbox_ports: Mapping[str, int]) -> Worker:
        """What a worker process runs: the rule set, the workflow, their stores and hosts."""
        setup, paths, clock = self.setup, self.paths, self.clock
        resolver = self.resolver()
        objects = self.objects()
        # a deferral, dead letter or quarantine record outlives the spool file: the objects
        # it points at are fsynced before it is committed (and only then)
        state = self.state(
            before_durable_commit=objects.make_written_durable,
            checkpoint_pages=WORKER_CHECKPOINT_PAGES,
        )
        transports = self.mailbox_transports(mailbox_ports)
        outbound = transports[setup.config.outbound] if setup.config.outbound else None
        poster = SignedPoster(signing_keys(setup.routes, self.environ), clock)
        parses = ParseOnce()  # one full parse a message, the Archive index's and Process's
        services = Services(
            objects=objects,
            timeline=state,
            idempotency=state,
            transports=self.destination_transports(transports),
            app_events=FileAppEvents(paths.events, before_publish=objects.make_written_durable),
            dead_letters=state,
            routes=setup.routes,
            clock=clock,
            gateway_host=self.settings.hostname,
            loop_key=loop_key(setup),
            resolver=resolver,
            sealer=self.sealer(),
            message_limits=setup.config.message_limits,
            parses=parses,
            deferrals=state,
            bounces=outbound,
            hooks=LocalHooks(setup.routes.hooks, poster, setup.config.routes.parent),
            webhooks=poster,
            quarantine=SqliteQuarantine(state),
            quarantine_days=quarantine_days(setup.mail_manager),
        )
        workflow = LocalWorkflow(setup.state_machine, services, self.settings.retry_scale)
        mail_manager = LocalMailManager(
            resources=setup.mail_manager,
            rule_sets=setup.rule_sets(),
            book=self.address_book(),
            actions=ActionPorts(
                objects=objects,
                idempotency=state,
                clock=clock,
                relays=self.relay_transports(transports),
                outbound=outbound,
                functions=LocalLambdas(setup.mail_manager),
                topics=TopicFiles(paths.home / "sns", clock),
                mailboxes=WorkMailFolders(paths.home / "workmail"),
                archive_index=self.archive(objects, WORKER_CHECKPOINT_PAGES),
                parses=parses,
                hostname=self.settings.hostname,
                replace_mail_from=setup.replace_mail_from,
            ),
            failures=RuleSetFailures(
                objects=objects,
                timeline=state,
                dead_letters=state,
                deferrals=state,
                retry_policy=setup.routes.delivery,
                clock=clock,
            ),
            logs=self.logs(),
            locks=paths.home / "locks",
            authenticator=services.authenticator,  # one check a message, shared with Process
        )
        return Worker(
            setup,
            state,
            self.spool(),
            objects,
            mail_manager,
            workflow,
            transports,
            Recorder(state, clock),
        )

    # ----------------------------------------------------------------------- operators

    def enforce_retention(self) -> dict[str, int]:
        """Delete archived messages past their archive's Retention and quarantined ones past
        the quarantine's; how many of each went."""
        objects = self.objects()
        archive = self.archive(objects)
        state = self.state()
        try:
            archived = archive.purge(archive_retentions(self.setup.mail_manager), self.clock.now())
            held = purge_quarantine(SqliteQuarantine(state), state, self.clock, objects.delete)
        finally:
            archive.close()
            state.close()
        return {"archived": len(archived), "quarantined": len(held)}

    def adopt_earlier_quarantine(self) -> list[str]:
        """Give the spool files an earlier version kept in `quarantine/` their records (on
        start): the spool file names adopted. Without that folder (every home made since), no
        database is opened for it."""
        folder = self.paths.home / "quarantine"
        if not folder.is_dir():
            return []
        objects = self.objects()
        state = self.state(
            before_durable_commit=objects.make_written_durable,
            checkpoint_pages=WORKER_CHECKPOINT_PAGES,
        )
        try:
            return adopt_earlier_quarantine(
                folder,
                objects,
                SqliteQuarantine(state),
                state,
                self.setup.routes,
                now=self.clock.now(),
                retention_days=quarantine_days(self.setup.mail_manager),
            )
        finally:
            state.close()

    def desk(self) -> Desk:
        """What `mxgate quarantine|archive|dlq|console` act on here: the gateway's state under
        its home, whether or not the gateway runs now."""
        paths = state_paths(self.settings)
        config, mail_manager = load_mail_manager_config(self.settings)
        state = self.state()
        objects = self.objects()
        running = paths.ports_file.exists()
        return Desk(
            timeline=state,
            messages=state,
            dead_letters=state,
            deferrals=state,
            quarantine=SqliteQuarantine(state),
            archive=self.archive(objects),
            objects=objects,
            routes=routes_of(config, mail_manager),
            clock=self.clock,
            actor=f"{getpass.getuser()}@{socket.gethostname()}",
            where=str(paths.state_db),
            after_queue=(
                f"the running gateway delivers it within {self.settings.defer_poll:g}s"
                if running
                else "the gateway delivers it when it next runs (`mxgate run`)"
            ),
            delete_object=objects.delete,
            mailboxes=paths.mailboxes,
            spool=paths.spool,
        )
