"""The routes file takes the template's parameters (routing/parameters.py): deployed for
another domain, it needs no edit; a name that is no parameter, or domains that contradict the
template's traffic policy, are refused with their place."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.config_files import ConfigFileError
from mxgate.mailmanager.resources import accepted_domains, load_mail_manager
from mxgate.mailmanager.template import Resolver, read_template, routes_parameters
from mxgate.routing.classify import RouteKind, classify
from mxgate.routing.parameters import substitute
from mxgate.routing.routes import domain_problems, load_checked_routes, load_routes
from tests.support import ROUTES, TEMPLATE

ACME = {
    "EmployeeDomain": "acme.com",
    "AppDomain": "apps.acme.com",
    "M365Tenant": "acme-com",
    "M365Employees": "carol@acme.com, dave@acme.com",
}


def test_placeholders_fill_text_list_items_and_keys():
    document = {
        "domains": ["${Domain}", "extra.example"],
        "addresses": ["orders@${Domain}", "${Team}"],
        "users": {"${Team}": "m365", "${Nobody}": "workspace", "boss@${Domain}": "workspace"},
    }
    parameters = {"Domain": "acme.com", "Team": "a@acme.com,b@acme.com", "Nobody": ""}
    filled, problems = substitute(document, parameters)
    assert problems == []
    assert filled == {
        "domains": ["acme.com", "extra.example"],
        "addresses": ["orders@acme.com", "a@acme.com", "b@acme.com"],
        "users": {"a@acme.com": "m365", "b@acme.com": "m365", "boss@acme.com": "workspace"},
    }


def test_a_name_that_is_no_parameter_is_a_placed_problem(tmp_path: Path):
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.read_text().replace("${AppDomain}", "${AppDomian}", 1))
    with pytest.raises(ConfigFileError) as refused:
        load_routes(path, {"EmployeeDomain": "acme.com", "AppDomain": "apps.acme.com"})
    (problem, *_) = refused.value.problems
    assert problem.place == "app_domains[0]"
    assert "${AppDomian} names no template parameter (did you mean 'AppDomain'?)" in str(problem)


def test_the_template_deployed_for_another_domain_routes_its_users():
    """`sam deploy --guided` with EmployeeDomain=acme.com and the rest: the same routes file."""
    resolver = Resolver(read_template(TEMPLATE), ACME)
    parameters = routes_parameters(resolver)
    assert parameters["WorkspaceRoutingDomain"] == "acme.com.test-google-a.com"  # derived
    assert parameters["M365RoutingDomain"] == "acmecom.mail.onmicrosoft.com"
    mail_manager = load_mail_manager(TEMPLATE, ACME)
    routes = load_checked_routes(ROUTES, parameters, accepted_domains(mail_manager))
    assert routes.employee_domains == ["acme.com"]
    for recipient, kind, name in (
        ("bob@acme.com", RouteKind.MAILBOX, "workspace"),
        ("carol@acme.com", RouteKind.MAILBOX, "m365"),
        ("orders@apps.acme.com", RouteKind.APP, "orders"),
        ("alice@nutrition.co", RouteKind.UNKNOWN, "unknown"),
    ):
        route = classify(recipient, routes)
        assert (route.kind, route.name) == (kind, name)
    # 365's mail leaves through the relay ingress point to the template's relay, named for
    # the tenant the parameters give
    assert routes.destinations["m365"].relay == "M365Relay"
    relay = mail_manager.relays["M365Relay"]
    assert relay.ServerName == "acme-com.mail.protection.outlook.com"
    assert routes.rewrite_address("workspace") == "mxgate@acme.com"


def test_literal_domains_that_contradict_the_template_fail_naming_the_mismatch(tmp_path: Path):
    literal = tmp_path / "routes.yaml"
    literal.write_text(
        ROUTES.read_text()
        .replace('"${EmployeeDomain}"', "nutrition.co")
        .replace("${AppDomain}", "customer-support.nutrition.co")
    )
    accepted = accepted_domains(load_mail_manager(TEMPLATE, ACME))
    assert accepted == {
        "acme.com": "TrafficPolicy.PolicyStatements[1] (ALLOW)",
        "apps.acme.com": "TrafficPolicy.PolicyStatements[1] (ALLOW)",
    }
    with pytest.raises(ConfigFileError) as refused:
        load_checked_routes(
            literal, routes_parameters(Resolver(read_template(TEMPLATE), ACME)), accepted
        )
    text = str(refused.value)
    assert (
        "the template accepts mail for acme.com (TrafficPolicy.PolicyStatements[1] (ALLOW))" in text
    )
    assert "its mail would be planned no delivery" in text
    assert "acme.com (TrafficPolicy.PolicyStatements[1] (ALLOW))" in text


def test_matching_domains_have_no_problem():
    routes = load_routes(ROUTES, routes_parameters(Resolver(read_template(TEMPLATE), ACME)))
    assert domain_problems(routes, {"acme.com": "x", "apps.acme.com": "y"}) == []


def test_a_relay_the_template_lacks_fails_naming_it(tmp_path: Path):
    misnamed = tmp_path / "routes.yaml"
    misnamed.write_text(ROUTES.read_text().replace("relay: M365Relay", "relay: M365Rleay"))
    mail_manager = load_mail_manager(TEMPLATE, ACME)
    parameters = routes_parameters(mail_manager.resolver)
    with pytest.raises(ConfigFileError) as refused:
        load_checked_routes(
            misnamed, parameters, accepted_domains(mail_manager), mail_manager.relays
        )
    (problem,) = refused.value.problems
    assert problem.place == "destinations.m365.relay"
    assert "names M365Rleay, which is no relay of the template (M365Relay, WorkspaceRelay)" in str(
        problem
    )
    # the shipped file names the template's relays
    load_checked_routes(ROUTES, parameters, accepted_domains(mail_manager), mail_manager.relays)
