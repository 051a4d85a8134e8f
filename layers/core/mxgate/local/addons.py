"""The traffic policy's add-on conditions on this machine: each add-on instance it asks is
bound to a DNS blocklist (`addons:` in config/local.yaml) and looked up once per SMTP session,
with a deadline, so a slow or dead blocklist never holds a session for long."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import Session

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.authn.resolver import CachingResolver
from mxgate.errors import ConfigError
from mxgate.local.config import DnsblConfig, DnsConfig, LocalConfig
from mxgate.mailmanager.addons import (
    AddonResult,
    policy_analyses,
    result_field_problems,
)
from mxgate.mailmanager.dnsbl import DnsblAnalyzer, result_fields
from mxgate.mailmanager.models import TrafficPolicy
from mxgate.mailmanager.resources import MailManagerResources

log = logging.getLogger("mxgate.addons")


def addon_problems(
    policy_id: str, policy: TrafficPolicy, config: LocalConfig, instances: Mapping[str, object]
) -> list[str]:
    """What keeps a traffic policy's add-on conditions from being answered here."""
    problems = []
    for use in policy_analyses(policy):
        binding = config.addons.get(use.analyzer)
        if binding is not None:
            fields = result_fields(binding.dnsbl.listed_field, binding.dnsbl.listings_field)
            problems += [
                f"{policy_id}.{place}: {why}" for place, why in result_field_problems(use, fields)
            ]
        else:
            known = (
                "an add-on instance of the template"
                if use.analyzer in instances
                else "not an add-on instance of the template"
            )
            problems.append(
                f"{policy_id}.{use.place}.Analyzer: {use.analyzer} ({known}) has no local "
                f"stand-in: add `addons: {{{use.analyzer}: {{dnsbl: {{zone: ...}}}}}}` to the "
                "local configuration"
            )
    for name in config.addons:
        if name not in instances:
            problems.append(
                f"addons.{name}: not an AWS::SES::MailManagerAddonInstance of the template "
                f"(its instances: {', '.join(sorted(instances)) or 'none'})"
            )
    return problems


def check_addons(
    config: LocalConfig,
    config_path: Path,
    policies: Mapping[str, TrafficPolicy],
    instances: Mapping[str, object],
) -> None:
    problems: list[str] = []
    for policy_id, policy in policies.items():
        problems += addon_problems(policy_id, policy, config, instances)
    problems = list(dict.fromkeys(problems))
    if problems:
        lines = "".join(f"\n  {problem}" for problem in problems)
        raise ConfigError(f"{config_path}: the template's add-ons cannot run here:{lines}")


@dataclass(frozen=True)
class BoundDnsbl:
    analyzer: DnsblAnalyzer
    settings: DnsblConfig


def bind_dnsbl(name: str, settings: DnsblConfig, dns: DnsConfig) -> BoundDnsbl:
    resolver = DnsPythonResolver(
        settings.nameservers or dns.nameservers,
        settings.port or dns.port,
        timeout=settings.timeout,
    )
    analyzer = DnsblAnalyzer(
        name,
        settings.zone,
        CachingResolver(resolver),
        settings.codes,
        (settings.listed_field, settings.listings_field),
    )
    return BoundDnsbl(analyzer, settings)


class SessionAddons:
    """The add-ons one traffic policy asks, answered once per SMTP session."""

    def __init__(self, bound: Mapping[str, BoundDnsbl]) -> None:
        self.bound = dict(bound)
        self._sessions: weakref.WeakKeyDictionary[Session, dict[str, AddonResult]] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def for_policy(cls, policy: TrafficPolicy, config: LocalConfig) -> SessionAddons:
        wanted = {use.analyzer for use in policy_analyses(policy)}
        return cls(
            {name: bind_dnsbl(name, config.addons[name].dnsbl, config.dns) for name in wanted}
        )

    async def _lookup(self, bound: BoundDnsbl, sender_ip: str) -> AddonResult:
        deadline = bound.settings.timeout
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(bound.analyzer.analyze, sender_ip), deadline
            )
        except TimeoutError:
            return bound.analyzer.failed(sender_ip, f"no answer within {deadline:g}s")

    async def results(self, session: Session, sender_ip: str) -> dict[str, AddonResult]:
        if not self.bound:
            return {}
        known = self._sessions.get(session)
        if known is None:
            found = await asyncio.gather(
                *(self._lookup(bound, sender_ip) for bound in self.bound.values())
            )
            known = {result.analyzer: result for result in found}
            for result in found:
                if result.failed:
                    log.warning(
                        "blocklist lookup failed",
                        extra={"addon": result.analyzer, "sender_ip": sender_ip},
                    )
            self._sessions[session] = known
        return known

    def refusal(self, results: Mapping[str, AddonResult]) -> str | None:
        """The temporary refusal a fail-closed add-on whose lookup failed asks for."""
        for name, result in results.items():
            bound = self.bound.get(name)
            if result.failed and bound is not None and bound.settings.on_lookup_failure == "closed":
                return f"451 4.7.1 Sender blocklist {bound.analyzer.zone} could not be checked; try again later"
        return None


def analyzers(config: LocalConfig, *sides: MailManagerResources) -> dict[str, DnsblAnalyzer]:
    """The blocklists these configurations' traffic policies ask, as far as this machine binds
    them (for the commands that evaluate a policy without a session: explain, replay)."""
    wanted = {
        use.analyzer
        for side in sides
        for policy in side.traffic_policies.values()
        for use in policy_analyses(policy)
    }
    return {
        name: bind_dnsbl(name, config.addons[name].dnsbl, config.dns).analyzer
        for name in sorted(wanted)
        if name in config.addons
    }
