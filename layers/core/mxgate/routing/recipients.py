"""The addresses the gateway takes mail for, from the routes file: what the traffic policy's
directory address list holds on both runtimes (`mxgate address-list sync`, and each deploy on
AWS). Pure.

Mail Manager matches an address list entry against the whole envelope recipient, `+tag`
included, so each address is listed with a `+*` pattern beside it (the routes file ignores
tags). An address list marks itself as the directory's with `Metadata: {MxgateMembers:
directory}` in the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mxgate.mailmanager.addresses import (
    AddressBook,
    AddressListMembers,
    StaticAddressBook,
    SyncResult,
    sync_members,
)
from mxgate.routing.routes import Routes

if TYPE_CHECKING:  # the RecipientsSync function reads no template
    from mxgate.mailmanager.resources import MailManagerResources

DIRECTORY = "directory"  # the MxgateMembers value of a list the routes file fills


def with_tags(address: str) -> list[str]:
    local, _, domain = address.casefold().rpartition("@")
    return [f"{local}@{domain}", f"{local}+*@{domain}"]


def directory_addresses(routes: Routes) -> list[str]:
    """Every user and application address with its tagged forms, `postmaster@` each employee
    domain (RFC 5321 4.5.1: always accepted; the directory's default host takes it unless it
    is listed), and `*@<domain>` for each employee domain when the directory's unknown users
    go to its default host."""
    entries: list[str] = []
    for domain in routes.employee_domains:
        entries += with_tags(f"postmaster@{domain}")
    for address in routes.directory.users:
        entries += with_tags(address)
    for app in routes.apps.values():
        for address in app.addresses:
            entries += with_tags(address)
    if routes.directory.unknown_users == "default":
        entries += [f"*@{domain.casefold()}" for domain in routes.employee_domains]
    return sorted(set(entries))


class DirectoryAddressBook:
    """What the traffic policy and the rule set look addresses up in: the template's lists
    marked `MxgateMembers: directory` hold the routes file's addresses (on AWS, `mxgate
    address-list sync --aws` and each deploy put them there); every other list is `others`'."""

    def __init__(
        self, others: AddressBook, resources: MailManagerResources, routes: Routes
    ) -> None:
        self.others = others
        addresses = directory_addresses(routes)
        self.members = dict.fromkeys(resources.lists_filled_with(DIRECTORY), addresses)
        self._directory = StaticAddressBook(self.members)

    def contains(self, list_id: str, address: str) -> bool:
        book = self._directory if list_id in self.members else self.others
        return book.contains(list_id, address)


def sync_directory(
    lists: AddressListMembers, list_ids: Sequence[str], routes: Routes, *, dry_run: bool = False
) -> list[SyncResult]:
    """Make each directory list hold exactly the routes file's addresses."""
    wanted = directory_addresses(routes)
    return [sync_members(lists, list_id, wanted, dry_run=dry_run) for list_id in list_ids]
