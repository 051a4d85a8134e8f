"""Issue 8 through `mxgate sandbox`, deployed for another domain: the template for acme.com
by parameters alone, and SES's reports of what the mailbox provider did. A module of its own:
one sandbox (one moto account) runs at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from mxgate.sandbox.runtime import Sandbox, SandboxOptions
from tests.support import REPO, ROUTES, local_config

ACME = {
    "EmployeeDomain": "acme.com",
    "AppDomain": "apps.acme.com",
    "M365Tenant": "acme-com",
    "WorkspaceEmployees": "bob@acme.com",
    "M365Employees": "carol@acme.com",
}


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The template deployed for acme.com by parameters alone, the shipped routes file
    unedited but for 365 through SES sending (so SES's reports apply): one sandbox for the two
    tests that follow (a start costs ~12 s)."""
    directory = tmp_path_factory.mktemp("acme")
    document = yaml.safe_load(ROUTES.read_text())
    document["destinations"]["m365"] = {
        "transport": "ses",
        "routing_domain": "${M365RoutingDomain}",
    }
    routes = directory / "routes.yaml"
    routes.write_text(yaml.safe_dump(document))
    config = local_config(directory, routes=str(routes))
    options = SandboxOptions(home=directory / "home", config=config, parameters=ACME)
    with Sandbox(options) as started:
        yield started


def test_the_template_deployed_for_another_domain_by_parameters_routes_its_users(
    acme: Sandbox,
) -> None:
    raw = b"From: a@shop.example\r\nTo: bob@acme.com\r\nSubject: order 12\r\n\r\nx\r\n"
    report = acme.send(
        raw,
        mail_from="a@shop.example",
        recipients=[
            "bob@acme.com",
            "carol@acme.com",
            "dave@acme.com",
            "orders@apps.acme.com",
            "x@nutrition.co",
        ],
    )
    outcomes = {r.recipient: (r.outcome, r.route) for r in report.recipients}
    assert outcomes == {
        "bob@acme.com": ("delivered", "workspace"),  # WorkspaceEmployees
        "carol@acme.com": ("relayed", "m365"),  # M365Employees; SES took it
        "dave@acme.com": ("refused", ""),  # in no parameter's list: refused at RCPT
        "orders@apps.acme.com": ("handed_to_app", "orders"),
        "x@nutrition.co": ("refused", ""),  # not this deployment's domain
    }
    bob = next(r for r in report.recipients if r.recipient == "bob@acme.com")
    assert bob.mailbox_host == "workspace"


def test_a_provider_bounce_after_relay_shows_on_the_timeline(acme: Sandbox) -> None:
    """SES relayed Carol's copy; 365 then refused it. SES's Bounce report, through the
    configuration set's EventBridge destination to the ProviderEvents function, turns her
    `relayed` into `bounced`, and the report is on her timeline."""
    raw = b"From: a@shop.example\r\nTo: carol@acme.com\r\nSubject: invoice\r\n\r\nx\r\n"
    report = acme.send(raw, mail_from="a@shop.example", recipients=["carol@acme.com"])
    (carol,) = report.recipients
    assert carol.outcome == "relayed"
    bounce = json.loads((REPO / "events" / "ses-bounce.json").read_text())
    bounce["detail"]["mail"]["tags"]["mxgate-message"] = [report.message_id]
    routed = "carol@acmecom.mail.onmicrosoft.com"  # the routing address SES was asked for
    bounce["detail"]["mail"]["destination"] = [routed]
    (bounced,) = bounce["detail"]["bounce"]["bouncedRecipients"]
    bounced["emailAddress"] = routed
    (target,) = acme.stack.event_targets(bounce)  # the configuration set's event destination
    assert target.logical_id == "ProviderEventsFunction"
    acme.stack.deliver_event(target, bounce)

    (after,) = acme.report(report.message_id, ["carol@acme.com"], {}).recipients
    assert after.outcome == "bounced"
    assert "5.1.10" in after.detail
    timeline = acme.mail_manager.failures.timeline.events(report.message_id)
    provider = [e for e in timeline if e.stage.value == "provider"]
    assert [(e.recipient, e.detail.split(":", 1)[0]) for e in provider] == [
        ("carol@acme.com", "bounced")
    ]
