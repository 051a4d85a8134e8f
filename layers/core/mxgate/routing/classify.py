"""Classify a recipient into a route. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mxgate.routing.routes import Routes


class RouteKind(StrEnum):
    MAILBOX = "mailbox"  # an employee: relay to the mailbox host that holds the mailbox
    APP = "app"  # an application address: hand to the application
    UNKNOWN = "unknown"  # nobody owns it: quarantined with the reason


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    name: str  # the mailbox host ("workspace", "m365"), the app, or "unknown"
    reason: str


def base_address(address: str) -> str:
    """`orders+tag@x` -> `orders@x`, lower-cased: the address a route is written for."""
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}".casefold()


def classify(recipient: str, routes: Routes) -> Route:
    address = base_address(recipient)
    domain = address.rpartition("@")[2]
    if domain in {d.casefold() for d in routes.app_domains}:
        for name, app in routes.apps.items():
            if address in {a.casefold() for a in app.addresses}:
                return Route(RouteKind.APP, name, f"{address} is owned by app {name}")
        return Route(RouteKind.UNKNOWN, "unknown", f"no application owns {address}")
    if domain in {d.casefold() for d in routes.employee_domains}:
        host = routes.directory.host_for(address)
        listed = address in routes.directory.users
        why = "listed in the directory" if listed else "directory default"
        return Route(RouteKind.MAILBOX, host, f"{address} lives on {host} ({why})")
    return Route(RouteKind.UNKNOWN, "unknown", f"{domain} is not an employee or application domain")
