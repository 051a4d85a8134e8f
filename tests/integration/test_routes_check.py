"""The RoutesCheck custom resource, run as CloudFormation runs it at deploy time: its answer
goes to the request's ResponseURL (a server on loopback stands in for CloudFormation's
presigned S3 URL). A routes file that does not route the stack's domains fails the deployment,
naming the mismatch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from mxgate.sandbox.stack import MOTO_CONFIG, Stack
from tests.awsstack import create_stack
from tests.support import ROUTES

ACME = {"EmployeeDomain": "acme.com", "AppDomain": "apps.acme.com", "M365Tenant": "acme-com"}


@pytest.fixture
def cloudformation() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A URL that takes CloudFormation's PUT, and the responses it took."""
    answers: list[dict[str, Any]] = []

    class Answer(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answers.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response?X-Amz-Signature=x", answers
    server.shutdown()
    server.server_close()


def request(url: str, kind: str, stack: Stack) -> dict[str, Any]:
    properties = stack.properties("RoutesCheck")
    return {
        "RequestType": kind,
        "ServiceToken": properties["ServiceToken"],
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/mxgate/0a1b2c3d",
        "RequestId": "5d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a",
        "ResourceType": "Custom::RoutesCheck",
        "LogicalResourceId": "RoutesCheck",
        "ResourceProperties": properties,
    }


def check(url: str, kind: str, parameters: dict[str, str] | None, routes: Path = ROUTES) -> Any:
    with mock_aws(config=MOTO_CONFIG):
        stack = create_stack(parameters=parameters)
        try:
            stack.function_by_code("routes_check").environment["MXGATE_ROUTES_FILE"] = str(routes)
            return stack.invoke("routes_check", request(url, kind, stack))
        finally:
            stack.close()


def test_the_shipped_routes_pass_for_the_example_and_for_another_domain(cloudformation):
    url, answers = cloudformation
    assert check(url, "Create", None)["ok"] is True
    assert check(url, "Update", ACME)["ok"] is True
    assert [a["Status"] for a in answers] == ["SUCCESS", "SUCCESS"]
    assert answers[0]["PhysicalResourceId"].endswith("/routes-check")
    assert answers[0]["LogicalResourceId"] == "RoutesCheck"


def test_a_routes_file_that_contradicts_the_parameters_fails_the_deployment(
    cloudformation, tmp_path
):
    url, answers = cloudformation
    literal = tmp_path / "routes.yaml"
    literal.write_text(
        ROUTES.read_text()
        .replace('"${EmployeeDomain}"', "nutrition.co")
        .replace("${AppDomain}", "customer-support.nutrition.co")
    )
    result = check(url, "Create", ACME, literal)
    assert result["ok"] is False
    (answer,) = answers
    assert answer["Status"] == "FAILED"
    assert "the template accepts mail for acme.com" in answer["Reason"]
    assert "its mail would be planned no delivery" in answer["Reason"]
    # deleting the stack is never refused
    check(url, "Delete", ACME, literal)
    assert answers[-1]["Status"] == "SUCCESS"
