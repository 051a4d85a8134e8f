"""A CloudFormation custom resource's side of the conversation: do the work on Create and
Update, nothing on Delete, and always answer at the ResponseURL, failures included (a custom
resource that never answers holds the stack for an hour)."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("mxgate.custom_resource")


def answer(
    event: Mapping[str, Any],
    *,
    ok: bool,
    physical_id: str,
    reason: str = "",
    data: Mapping[str, Any] | None = None,
) -> None:
    """PUT the result to the presigned URL CloudFormation gave the request."""
    body = json.dumps(
        {
            "Status": "SUCCESS" if ok else "FAILED",
            "Reason": reason[:1000] or "see the function's log",
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": dict(data or {}),
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 -- CloudFormation's own https URL
        event["ResponseURL"],
        data=body,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        response.read()


def run_custom_resource(
    event: Mapping[str, Any],
    physical_id: str,
    work: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> bool:
    """`work(ResourceProperties)` on Create and Update (its result is the resource's data);
    Delete succeeds without work. Answers either way; returns whether it succeeded."""
    kind = event.get("RequestType")
    try:
        data = {} if kind == "Delete" else work(event.get("ResourceProperties") or {})
    except Exception as error:
        log.exception("custom resource failed", extra={"request_type": kind})
        answer(event, ok=False, physical_id=physical_id, reason=f"{type(error).__name__}: {error}")
        return False
    answer(event, ok=True, physical_id=physical_id, reason=f"{kind} done", data=data)
    return True
