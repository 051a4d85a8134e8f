"""The directory's address list on AWS, filled from the routes file: by `mxgate address-list
sync --aws`, and by the RecipientsSync custom resource on each deploy. Mail Manager's API goes
through botocore's Stubber (moto has no mailmanager service; the Stubber checks each request and
answer against botocore's model); the custom resource's handler runs in its own environment
from template.yaml (tests/awsstack.py) and answers a ResponseURL on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from mxgate.adapters.aws import bootstrap
from mxgate.adapters.aws import operator as operator_module
from mxgate.adapters.aws.address_lists import MailManagerAddressLists
from mxgate.cli import main
from mxgate.routing.recipients import directory_addresses, sync_directory
from mxgate.routing.routes import load_routes
from tests.awsstack import MOTO_CONFIG, REGION, Stack, create_stack, fake_credentials
from tests.support import REPO

ROUTES = REPO / "config" / "routes.yaml"
LIST_ID = "a-list1234567890"
CREATED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def listed(*addresses: str) -> dict[str, Any]:
    return {"Addresses": [{"Address": a, "CreatedTimestamp": CREATED} for a in addresses]}


def expect_sync(stubber: Stubber, current: list[str], routes: Path = ROUTES) -> tuple[list, list]:
    """What a sync must ask Mail Manager, given the list's current members."""
    wanted = directory_addresses(load_routes(routes))
    stubber.add_response(
        "list_members_of_address_list", listed(*current), {"AddressListId": LIST_ID}
    )
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    for address in added:
        stubber.add_response(
            "register_member_to_address_list", {}, {"AddressListId": LIST_ID, "Address": address}
        )
    for address in removed:
        stubber.add_response(
            "deregister_member_from_address_list",
            {},
            {"AddressListId": LIST_ID, "Address": address},
        )
    return added, removed


@pytest.fixture
def mailmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Stubber]]:
    fake_credentials(monkeypatch)
    client = boto3.client("mailmanager", region_name=REGION)
    stubber = Stubber(client)
    yield client, stubber
    stubber.assert_no_pending_responses()


def test_sync_adds_what_the_routes_route_and_removes_the_rest(mailmanager):
    client, stubber = mailmanager
    lists = MailManagerAddressLists(client)
    added, removed = expect_sync(stubber, ["alice@nutrition.co", "someone-who-left@nutrition.co"])
    assert "alice+*@nutrition.co" in added  # +tag forms: Mail Manager matches the whole address
    assert "orders@customer-support.nutrition.co" in added
    assert removed == ["someone-who-left@nutrition.co"]
    with stubber:
        (result,) = sync_directory(lists, [LIST_ID], load_routes(ROUTES))
    assert (result.added, result.removed) == (added, removed)
    assert result.members == len(directory_addresses(load_routes(ROUTES)))


def test_sync_command_on_aws_reports_the_changes_as_json(mailmanager, monkeypatch, capsys):
    client, stubber = mailmanager
    added, removed = expect_sync(stubber, ["bob@nutrition.co", "bob+*@nutrition.co", "x@y.example"])
    real = operator_module.OperatorAws.client
    monkeypatch.setattr(
        operator_module.OperatorAws,
        "client",
        lambda self, service: client if service == "mailmanager" else real(self, service),
    )
    with stubber:
        code = main(
            ["address-list", "sync", "--aws", "--address-list-id", LIST_ID, "--json", "--routes",
             str(ROUTES)]
        )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False
    (synced,) = report["lists"]
    assert (synced["list"], synced["added"], synced["removed"]) == (LIST_ID, added, removed)


def test_a_dry_run_reads_and_changes_nothing(mailmanager, monkeypatch, capsys):
    client, stubber = mailmanager
    stubber.add_response("list_members_of_address_list", listed(), {"AddressListId": LIST_ID})
    monkeypatch.setattr(operator_module.OperatorAws, "client", lambda self, service: client)
    monkeypatch.setenv("MXGATE_RECIPIENTS_LIST_ID", LIST_ID)
    with stubber:
        assert main(["address-list", "sync", "--aws", "--dry-run", "--routes", str(ROUTES)]) == 0
    out = capsys.readouterr().out
    assert f"{LIST_ID}: " in out
    assert " would add, 0 would remove" in out
    assert "  + alice@nutrition.co" in out


def test_sync_without_aws_says_the_local_gateway_reads_the_routes_itself(capsys):
    assert main(["address-list", "sync"]) == 1
    assert "reads the directory from the routes file itself" in capsys.readouterr().err


# ----------------------------------------------------------------------- on each deploy


class _Answers(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def response_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """CloudFormation's presigned ResponseURL, on loopback: what the custom resource answers."""
    _Answers.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/answer?signature=x", _Answers.received
    server.shutdown()
    server.server_close()


def deploy_event(kind: str, url: str) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/mxgate/guid",
        "RequestId": "request-1",
        "ResourceType": "Custom::DirectoryAddressList",
        "LogicalResourceId": "RecipientsSync",
        **({"PhysicalResourceId": LIST_ID} if kind != "Create" else {}),
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:sync",
            "AddressListId": LIST_ID,
            "Routes": "arn:aws:lambda:us-east-1:123456789012:layer:config:7",
        },
    }


@pytest.fixture
def stack(mailmanager, monkeypatch) -> Iterator[Stack]:
    client, _ = mailmanager
    real = bootstrap.LazyClient
    monkeypatch.setattr(
        bootstrap,
        "LazyClient",
        lambda service, **kw: client if service == "mailmanager" else real(service, **kw),
    )
    with mock_aws(config=MOTO_CONFIG):
        created = create_stack(ses=False)
        yield created
        created.close()


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_each_deploy_fills_the_list_and_answers_cloudformation(stack, mailmanager, response_url,
                                                               kind):  # fmt: skip
    _, stubber = mailmanager
    url, answers = response_url
    added, _ = expect_sync(stubber, [])
    with stubber:
        stack.invoke("recipients_sync", deploy_event(kind, url))
    (answer,) = answers
    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == LIST_ID
    assert (answer["RequestId"], answer["LogicalResourceId"]) == ("request-1", "RecipientsSync")
    assert answer["Data"] == {"Members": len(added)}


def test_a_failed_sync_fails_the_deploy_with_the_reason(stack, mailmanager, response_url):
    _, stubber = mailmanager
    url, answers = response_url
    stubber.add_client_error(
        "list_members_of_address_list", "AccessDeniedException", "not allowed", 403
    )
    with stubber:
        stack.invoke("recipients_sync", deploy_event("Update", url))
    (answer,) = answers
    assert answer["Status"] == "FAILED"
    assert "AccessDeniedException" in answer["Reason"]


def test_deleting_the_stack_leaves_the_list_to_cloudformation(stack, mailmanager, response_url):
    url, answers = response_url
    stack.invoke("recipients_sync", deploy_event("Delete", url))  # no Mail Manager call at all
    assert [a["Status"] for a in answers] == ["SUCCESS"]
