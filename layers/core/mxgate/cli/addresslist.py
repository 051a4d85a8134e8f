"""`mxgate address-list`: the members of the template's Mail Manager address lists.

One file per list under $MXGATE_HOME/address-lists/<list logical id>.txt, one address or
pattern a line. The gateway rereads a file when it changes, so edits apply at once. A list
whose template Metadata says `MxgateMembers: directory` holds the routes file's addresses:
the local gateway reads them from the routes file, `sync --aws` puts them in the deployed
list (each deploy does too), and nobody edits it by hand.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_aws_arguments,
    add_settings_arguments,
    print_json,
    settings_from,
    table,
)
from mxgate.errors import ConfigError
from mxgate.local.addresslists import FileAddressBook, valid_entry
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import load_mail_manager_config
from mxgate.mailmanager.addresses import SyncResult
from mxgate.mailmanager.resources import MailManagerResources
from mxgate.routing.recipients import DIRECTORY, sync_directory


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "address-list",
        help=COMMANDS["address-list"].help,
        description="Manage the local members of the template's AWS::SES::MailManagerAddressList "
        "resources. LIST is the resource's logical id (or its AddressListName). An entry is an "
        "address or a pattern with * wildcards, such as *@example.com.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add addresses to a list")
    add.add_argument("list", metavar="LIST")
    add.add_argument("addresses", metavar="ADDRESS", nargs="+")
    add.set_defaults(handler=add_members)

    remove = actions.add_parser("remove", help="remove addresses from a list")
    remove.add_argument("list", metavar="LIST")
    remove.add_argument("addresses", metavar="ADDRESS", nargs="+")
    remove.set_defaults(handler=remove_members)

    show = actions.add_parser("list", help="the lists and their sizes, or one list's members")
    show.add_argument("list", metavar="LIST", nargs="?")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=list_members)

    load = actions.add_parser(
        "import",
        help="add the addresses of a CSV file to a list",
        description="Read a CSV file with an `address` column (or, without that header, "
        "addresses in the first column) and add them to LIST.",
    )
    load.add_argument("list", metavar="LIST")
    load.add_argument("--csv", type=Path, required=True, metavar="FILE", help="the CSV file")
    load.add_argument(
        "--replace", action="store_true", help="replace the list instead of adding to it"
    )
    load.set_defaults(handler=import_members)

    sync = actions.add_parser(
        "sync",
        help="fill the directory's address list from the routes file",
        description="Make each address list the template marks `MxgateMembers: directory` hold "
        "exactly the routes file's addresses: every directory user and application address, "
        "each with its +tag form (and *@domain when `directory.unknown_users` is default). Each "
        "deploy does it (the RecipientsSync resource); this does it now. On this machine the "
        "gateway reads the routes file itself, so sync needs --aws.",
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="say what would change; change nothing"
    )
    sync.add_argument("--json", action="store_true", help="print JSON")
    sync.add_argument(
        "--routes",
        type=Path,
        default=Path("config/routes.yaml"),
        help="the routes file to take the addresses from (default config/routes.yaml)",
    )
    add_aws_arguments(sync, ["recipients_list"])
    sync.set_defaults(handler=sync_members)
    for sub in (add, remove, show, load):
        add_settings_arguments(sub)


def _open(args: argparse.Namespace) -> tuple[LocalSettings, MailManagerResources, FileAddressBook]:
    bootstrap = Bootstrap(settings_from(args))
    _, mail_manager = load_mail_manager_config(bootstrap.settings)
    return bootstrap.settings, mail_manager, bootstrap.address_list_files()


def _editable(mail_manager: MailManagerResources, reference: str) -> str:
    """The list's id, unless the routes file fills it (edits would be undone at the next sync)."""
    list_id = mail_manager.address_list_id(reference)
    if list_id in mail_manager.lists_filled_with(DIRECTORY):
        raise ConfigError(
            f"{list_id} holds the routes file's directory (MxgateMembers: directory): add the "
            "address to config/routes.yaml (directory.users or an app's addresses), then run "
            "`mxgate address-list sync`"
        )
    return list_id


def _checked(entries: list[str]) -> list[str]:
    cleaned = [entry.strip() for entry in entries if entry.strip()]
    bad = [entry for entry in cleaned if not valid_entry(entry)]
    if bad:
        raise ConfigError(
            f"not an address or pattern (user@example.com, *@example.com): {', '.join(bad)}"
        )
    return cleaned


def add_members(args: argparse.Namespace) -> int:
    _, mail_manager, book = _open(args)
    list_id = _editable(mail_manager, args.list)
    new = _checked(args.addresses)
    before = book.entries(list_id)
    book.save(list_id, before + new)
    after = book.entries(list_id)
    print(f"{list_id}: {len(after) - len(before)} added, {len(after)} in all")
    return 0


def remove_members(args: argparse.Namespace) -> int:
    _, mail_manager, book = _open(args)
    list_id = _editable(mail_manager, args.list)
    gone = {entry.casefold() for entry in _checked(args.addresses)}
    before = book.entries(list_id)
    missing = sorted(gone - {entry.casefold() for entry in before})
    book.save(list_id, [entry for entry in before if entry.casefold() not in gone])
    after = book.entries(list_id)
    print(f"{list_id}: {len(before) - len(after)} removed, {len(after)} in all")
    if missing:
        print(f"not in {list_id}: {', '.join(missing)}")
        return 1
    return 0


def list_members(args: argparse.Namespace) -> int:
    bootstrap = Bootstrap(settings_from(args))
    mail_manager = bootstrap.setup.mail_manager
    files = bootstrap.address_list_files()
    routed = bootstrap.address_book().members

    def members(list_id: str) -> list[str]:
        return routed[list_id] if list_id in routed else files.entries(list_id)

    def source(list_id: str) -> str:
        return str(bootstrap.setup.config.routes) if list_id in routed else str(files.path(list_id))

    if args.list is not None:
        list_id = mail_manager.address_list_id(args.list)
        entries = members(list_id)
        if args.json:
            print_json({"list": list_id, "addresses": entries, "source": source(list_id)})
        else:
            print("\n".join(entries) if entries else f"{list_id} is empty")
        return 0
    rows = [
        [
            list_id,
            address_list.AddressListName or "",
            str(len(members(list_id))),
            source(list_id),
        ]
        for list_id, address_list in sorted(mail_manager.address_lists.items())
    ]
    if args.json:
        print_json(
            {
                "lists": [
                    {"list": r[0], "name": r[1], "addresses": int(r[2]), "file": r[3]} for r in rows
                ]
            }
        )
    elif rows:
        print(table(rows, ["LIST", "NAME", "ADDRESSES", "FROM"]))
    else:
        print("the template has no address lists")
    return 0


def read_csv(path: Path) -> list[str]:
    """The `address` column, or the first column when there is no such header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    rows = [row for row in csv.reader(text.splitlines()) if row and row[0].strip()]
    rows = [row for row in rows if not row[0].lstrip().startswith("#")]
    if not rows:
        return []
    header = [cell.strip().casefold() for cell in rows[0]]
    if "address" in header:
        column = header.index("address")
        return [row[column] for row in rows[1:] if len(row) > column and row[column].strip()]
    return [row[0] for row in rows]


def import_members(args: argparse.Namespace) -> int:
    _, mail_manager, book = _open(args)
    list_id = _editable(mail_manager, args.list)
    new = _checked(read_csv(args.csv))
    before = [] if args.replace else book.entries(list_id)
    book.save(list_id, before + new)
    after = book.entries(list_id)
    print(f"{list_id}: {len(new)} read from {args.csv}, {len(after)} in all")
    return 0


def _report(results: list[SyncResult], *, as_json: bool, dry_run: bool) -> None:
    if as_json:
        print_json({"dry_run": dry_run, "lists": [result.as_json() for result in results]})
        return
    verb = "would add" if dry_run else "added"
    for result in results:
        print(
            f"{result.list_id}: {len(result.added)} {verb}, "
            f"{len(result.removed)} {verb.replace('add', 'remove')}, "
            f"{result.members} in all"
        )
        for address in result.added:
            print(f"  + {address}")
        for address in result.removed:
            print(f"  - {address}")


def sync_members(args: argparse.Namespace) -> int:
    if not args.aws:
        raise ConfigError(
            "on this machine the gateway reads the directory from the routes file itself, so "
            "there is nothing to sync: `mxgate address-list sync --aws` fills the deployed list"
        )
    from mxgate.adapters.aws.address_lists import MailManagerAddressLists  # noqa: PLC0415
    from mxgate.adapters.aws.operator import deployed_routes, operator_aws  # noqa: PLC0415

    operator = operator_aws(args)
    list_id = operator.names.need("recipients_list")
    routes = deployed_routes(operator, args.routes)  # with the stack's parameter values
    lists = MailManagerAddressLists(operator.client("mailmanager"))
    results = sync_directory(lists, [list_id], routes, dry_run=args.dry_run)
    _report(results, as_json=args.json, dry_run=args.dry_run)
    return 0
