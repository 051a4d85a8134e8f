"""A CloudFormation custom resource's side of the exchange: read the request, answer on its
presigned ResponseURL (AWS CloudFormation User Guide, "Custom resources": the response is a
PUT of a JSON document with Status SUCCESS or FAILED, and FAILED's Reason is what
`sam deploy` shows)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REASON_MAX = 3000  # CloudFormation keeps a few KB of a reason; the start says what matters


class CustomResourceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

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
