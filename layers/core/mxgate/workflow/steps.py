"""The steps of the state machine (statemachine/pipeline.asl.json), by the function that runs
each (functions/<name>/app.py); the Lambda handlers and the local interpreter both call these.
Each takes its input document and the services, and returns its output document. In the
order a message meets them:

- Process (`workflow.process`): read, parse, authenticate and classify the stored message,
  and plan its deliveries. A message Process could not handle is retried, then deferred
  (DeferProcessing) or dead-lettered (DeadLetterProcessing) whole: `workflow.unprocessed`.
- Deliver (`workflow.deliver`), in a Map over the deliveries: one attempt of one delivery to
  its mailbox host's transport, its application, webhook or hook; retried on transient errors.
- Defer (`workflow.defer`): after the retries, the deferred queue; at the lifetime's end, a
  DSN to the sender or a dead letter. The same function defers a message Process could not
  handle: the input says which.
- DeadLetter (`workflow.dead_letter`): what cannot be completed, kept for `mxgate dlq`; a
  delivery, or a message Process could not handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from mxgate.errors import as_family
from mxgate.workflow import dead_letter as dead_letters
from mxgate.workflow import defer as deferrals
from mxgate.workflow.deliver import deliver
from mxgate.workflow.model import (
    DEAD_LETTER_INPUT,
    DEFER_INPUT,
    DeadLetterInput,
    DeferInput,
    DeliverInput,
    DeliveryResult,
    ProcessingFailure,
    ProcessInput,
)
from mxgate.workflow.process import process
from mxgate.workflow.services import Services
from mxgate.workflow.unprocessed import dead_letter_processing, defer_processing

__all__ = ["STEPS", "dead_letter", "defer", "deliver", "process"]

Step = Callable[[Any, Services], Any]  # a JSON document in, a JSON document out


def defer(request: DeferInput | ProcessingFailure, services: Services) -> DeliveryResult:
    """A delivery, or a message, to try again later (or to give up on, past its lifetime)."""
    if isinstance(request, ProcessingFailure):
        return defer_processing(request, services)
    return deferrals.defer(request, services)


def dead_letter(request: DeadLetterInput | ProcessingFailure, services: Services) -> DeliveryResult:
    """A delivery, or a message, that cannot be completed: recorded for `mxgate dlq`."""
    if isinstance(request, ProcessingFailure):
        return dead_letter_processing(request, services)
    return dead_letters.dead_letter(request, services)


def _on_documents(
    step: Callable[[Any, Services], BaseModel], model: type[BaseModel] | TypeAdapter[Any]
) -> Step:
    validate = model.validate_python if isinstance(model, TypeAdapter) else model.model_validate

    def run(document: Any, services: Services) -> Any:
        try:
            return step(validate(document), services).model_dump(mode="json")
        except Exception as error:
            raise as_family(error) from error  # the name the state machine's Retry lists

    return run


# functions/<name>/ in the template -> the step that function's handler calls
STEPS: dict[str, Step] = {
    "process": _on_documents(process, ProcessInput),
    "deliver": _on_documents(deliver, DeliverInput),
    "defer": _on_documents(defer, DEFER_INPUT),
    "dead_letter": _on_documents(dead_letter, DEAD_LETTER_INPUT),
}
