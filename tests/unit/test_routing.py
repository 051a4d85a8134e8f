"""Classification of recipients into routes, and the routes file's validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mxgate.errors import ConfigError
from mxgate.routing.classify import RouteKind, base_address, classify
from mxgate.routing.routes import load_routes
from tests.support import REPO, routes_parameters_of_samconfig, shipped_routes

ROUTES = shipped_routes()


@pytest.mark.parametrize(
    ("recipient", "kind", "name"),
    [
        ("alice@nutrition.co", RouteKind.MAILBOX, "workspace"),
        ("Carol@Nutrition.CO", RouteKind.MAILBOX, "m365"),
        ("carol+newsletters@nutrition.co", RouteKind.MAILBOX, "m365"),
        ("someone.new@nutrition.co", RouteKind.MAILBOX, "workspace"),  # the directory default
        ("orders@customer-support.nutrition.co", RouteKind.APP, "orders"),
        ("returns+rma-1@customer-support.nutrition.co", RouteKind.APP, "returns"),
        ("hr@customer-support.nutrition.co", RouteKind.UNKNOWN, "unknown"),
        ("x@elsewhere.example", RouteKind.UNKNOWN, "unknown"),
    ],
)
def test_classify(recipient, kind, name):
    route = classify(recipient, ROUTES)
    assert (route.kind, route.name) == (kind, name)
    assert route.reason


def test_base_address_strips_the_tag_and_case():
    assert base_address("Orders+Tag+More@Example.COM") == "orders@example.com"


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def base_document() -> dict:
    return yaml.safe_load((REPO / "config" / "routes.yaml").read_text())


def test_a_directory_host_without_destination_is_refused(tmp_path):
    document = base_document()
    document["directory"]["users"]["eve@nutrition.co"] = "exchange"
    with pytest.raises(
        ConfigError, match=r"directory\.users\.eve@nutrition\.co: no destination 'exchange'"
    ):
        load_routes(write(tmp_path, document), routes_parameters_of_samconfig())


def test_an_app_address_outside_the_app_domains_is_refused(tmp_path):
    document = base_document()
    document["apps"]["orders"]["addresses"].append("orders@nutrition.co")
    with pytest.raises(ConfigError, match="not on an application domain"):
        load_routes(write(tmp_path, document), routes_parameters_of_samconfig())


def test_unknown_fields_name_their_place(tmp_path):
    document = base_document()
    document["directory"]["defualt"] = "m365"
    with pytest.raises(ConfigError, match=r"directory\.defualt"):
        load_routes(write(tmp_path, document), routes_parameters_of_samconfig())
