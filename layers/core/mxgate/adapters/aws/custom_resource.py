"""A CloudFormation custom resource's side of the exchange: read the request, answer on its
presigned ResponseURL (AWS CloudFormation User Guide, "Custom resources": the response is a
PUT of a JSON document with Status SUCCESS or FAILED, and FAILED's Reason is what
`sam deploy` shows). Always answer, failures included: a custom resource that never answers
holds the stack for an hour."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("mxgate.custom_resource")

REASON_MAX = 3000  # CloudFormation keeps a few KB of a reason; the start says what matters


class CustomResourceRequest(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    RequestType: Literal["Create", "Update", "Delete"]
    ResponseURL: str
    StackId: str
    RequestId: str
    LogicalResourceId: str
    PhysicalResourceId: str | None = None
    ResourceProperties: dict[str, Any] = Field(default_factory=dict)


def respond(
    request: CustomResourceRequest,
    *,
    ok: bool,
    reason: str = "",
    physical_id: str,
    data: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> None:
    body = json.dumps(
        {
            "Status": "SUCCESS" if ok else "FAILED",
            "Reason": reason[:REASON_MAX] or "done",
            "PhysicalResourceId": physical_id,
            "StackId": request.StackId,
            "RequestId": request.RequestId,
            "LogicalResourceId": request.LogicalResourceId,
            "Data": dict(data or {}),
        }
    ).encode()
    put = urllib.request.Request(  # noqa: S310 -- CloudFormation's own presigned https URL
        request.ResponseURL,
        data=body,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(put, timeout=timeout) as answer:  # noqa: S310
        answer.read()


def run_custom_resource(
    event: Mapping[str, Any],
    physical_id: str,
    work: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> bool:
    """`work(ResourceProperties)` on Create and Update (its result is the resource's data);
    Delete succeeds without work. Answers either way; returns whether it succeeded."""
    request = CustomResourceRequest.model_validate(event)
    kind = request.RequestType
    try:
        data = {} if kind == "Delete" else work(request.ResourceProperties)
    except Exception as error:
        log.exception("custom resource failed", extra={"request_type": kind})
        respond(
            request, ok=False, physical_id=physical_id, reason=f"{type(error).__name__}: {error}"
        )
        return False
    respond(request, ok=True, physical_id=physical_id, reason=f"{kind} done", data=data)
    return True
