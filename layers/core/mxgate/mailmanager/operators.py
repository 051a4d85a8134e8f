"""The comparison operators shared by traffic policies and rule sets.

Several values are ORed; the negative operators (NOT_EQUALS, NOT_CIDR_MATCHES) hold only
when no value matches. Comparisons ignore case: AWS does not document case handling, and a
gateway that lets `Orders@` slip past a rule written for `orders@` surprises everyone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from mxgate.mailmanager.models import IpOperator, NumberOperator, StringOperator


def _string_match(operator: StringOperator, candidate: str, value: str) -> bool:
    candidate, value = candidate.casefold(), value.casefold()
    if operator in (StringOperator.EQUALS, StringOperator.NOT_EQUALS):
        return candidate == value
    if operator is StringOperator.STARTS_WITH:
        return candidate.startswith(value)
    if operator is StringOperator.ENDS_WITH:
        return candidate.endswith(value)
    return value in candidate


def string_holds(
    operator: StringOperator, candidates: Sequence[str], values: Sequence[str]
) -> bool:
    """True when any candidate matches any value; NOT_EQUALS when no candidate equals any."""
    hit = any(_string_match(operator, c, v) for c in candidates for v in values)
    return not hit if operator is StringOperator.NOT_EQUALS else hit


@lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr.strip(), strict=False)


def ip_holds(operator: IpOperator, address: str | None, cidrs: Sequence[str]) -> bool:
    """An address of the other family (or none at all) matches no CIDR."""
    hit = False
    if address:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        hit = any(ip.version == _network(c).version and ip in _network(c) for c in cidrs)
    return not hit if operator is IpOperator.NOT_CIDR_MATCHES else hit


def number_holds(operator: NumberOperator, actual: float, value: float) -> bool:
    return {
        NumberOperator.EQUALS: actual == value,
        NumberOperator.NOT_EQUALS: actual != value,
        NumberOperator.LESS_THAN: actual < value,
        NumberOperator.GREATER_THAN: actual > value,
        NumberOperator.LESS_THAN_OR_EQUAL: actual <= value,
        NumberOperator.GREATER_THAN_OR_EQUAL: actual >= value,
    }[operator]


def ip_family(address: str) -> int:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return 4
    return ip.version
