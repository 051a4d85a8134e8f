"""The steps of the state machine (statemachine/pipeline.asl.json), by the function that runs
each (functions/<name>/app.py); the Lambda handlers and the local interpreter both call these.
Each takes its input document and the services, and returns its output document. In the
order a message meets them:

- Process (`workflow.process`): read, parse, authenticate and classify the stored message,
  and plan its deliveries; the Quarantine step keeps a message Process could not handle.
- Deliver (`workflow.deliver`), in a Map over the deliveries: one attempt of one delivery to
  its mailbox host's transport, its application, webhook or hook; retried on transient errors.
- Defer (`workflow.defer`): after the retries, the deferred queue; at the lifetime's end, a
  DSN to the sender or a dead letter.
- DeadLetter (`workflow.dead_letter`): what cannot be completed, kept for `mxgate dlq`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from mxgate.errors import as_family
from mxgate.workflow.dead_letter import dead_letter
from mxgate.workflow.defer import defer
from mxgate.workflow.deliver import deliver
from mxgate.workflow.model import (
    DeadLetterInput,
    DeferInput,
    DeliverInput,
    ProcessInput,
    QuarantineInput,
)
from mxgate.workflow.process import process, quarantine
from mxgate.workflow.services import Services

__all__ = ["STEPS", "dead_letter", "defer", "deliver", "process", "quarantine"]

Step = Callable[[Any, Services], Any]  # a JSON document in, a JSON document out


def _on_documents(step: Callable[[Any, Services], BaseModel], model: type[BaseModel]) -> Step:
    def run(document: Any, services: Services) -> Any:
        try:
            return step(model.model_validate(document), services).model_dump(mode="json")
        except Exception as error:
            raise as_family(error) from error  # the name the state machine's Retry lists

    return run


# functions/<name>/ in the template -> the step that function's handler calls
STEPS: dict[str, Step] = {
    "process": _on_documents(process, ProcessInput),
    "deliver": _on_documents(deliver, DeliverInput),
    "defer": _on_documents(defer, DeferInput),
    "dead_letter": _on_documents(dead_letter, DeadLetterInput),
    "quarantine": _on_documents(quarantine, QuarantineInput),
}
