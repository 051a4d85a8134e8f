"""The local workflow runner: the deployed state machine definition, run by the ASL
interpreter, with each Task routed to the same step code the Lambda functions call, and each
Retry interval waited out in the deferred queue."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from mxgate.errors import ConfigError, TransientError
from mxgate.mailmanager.template import Resolver
from mxgate.records import (
    DeferredProcessing,
    Delivery,
    Envelope,
    Stage,
    StepRetry,
    message_id_of,
    variant_of,
)
from mxgate.workflow.asl import Execution, ExecutionFailedError, Interpreter
from mxgate.workflow.model import ProcessInput, Redelivery, Reprocessing, StepError
from mxgate.workflow.services import Services
from mxgate.workflow.steps import STEPS

log = logging.getLogger("mxgate.workflow")

STATE_MACHINE_TYPE = "AWS::Serverless::StateMachine"


@dataclass(frozen=True)
class StateMachineSource:
    definition: dict[str, Any]
    resource_steps: dict[str, str]  # "${ProcessFunctionArn}" -> "process"


def load_state_machine(template: Path, resolver: Resolver) -> StateMachineSource:
    """The definition file and its DefinitionSubstitutions, read from the template."""
    machines = [
        (name, r) for name, r in resolver.resources.items() if r.get("Type") == STATE_MACHINE_TYPE
    ]
    if len(machines) != 1:
        raise ConfigError(f"{template}: expected one {STATE_MACHINE_TYPE}, found {len(machines)}")
    name, machine = machines[0]
    properties = machine.get("Properties", {})
    uri = properties.get("DefinitionUri")
    if not isinstance(uri, str):
        raise ConfigError(f"{template}: {name}.DefinitionUri must name the ASL file")
    definition = json.loads((template.parent / uri).read_text(encoding="utf-8"))
    resource_steps = {}
    for variable, value in (properties.get("DefinitionSubstitutions") or {}).items():
        target = value.get("Fn::GetAtt") if isinstance(value, dict) else None
        if not target:
            continue
        function = target[0] if isinstance(target, list) else str(target).split(".")[0]
        code_uri = resolver.resources.get(function, {}).get("Properties", {}).get("CodeUri", "")
        step = Path(str(code_uri)).name
        if step not in STEPS:
            raise ConfigError(
                f"{template}: {variable} names {function} ({code_uri}), which is no step"
            )
        resource_steps[f"${{{variable}}}"] = step
    used = set(re.findall(r"\$\{\w+\}", json.dumps(definition)))
    missing = sorted(used - set(resource_steps))
    if missing:
        raise ConfigError(
            f"{template}: {name} uses {missing} with no DefinitionSubstitutions entry"
        )
    return StateMachineSource(definition, resource_steps)


class LocalWorkflow:
    """Runs executions of the deployed definition on this machine. A Task's Retry interval is
    never slept out here: it goes to the deferred queue as a StepRetry (scaled by
    `retry_scale`, which tests shorten), and the gateway's scheduler hands it to a worker
    when due, so a worker is only ever busy with work, never with waiting."""

    def __init__(
        self, source: StateMachineSource, services: Services, retry_scale: float = 1.0
    ) -> None:
        self.services = services
        self.retry_scale = retry_scale
        tasks = {
            resource: (lambda doc, step=STEPS[name]: step(doc, services))
            for resource, name in source.resource_steps.items()
        }
        self.interpreter = Interpreter(
            source.definition,
            tasks,
            services.clock,
            on_failure=self._failed,
            on_retry=self._retrying,
        )
        self._current = ""

    def _failed(self, state: str, error: str, cause: str) -> None:
        """Every Task failure, on the terminal and in the error log when it matters: what the
        timeline says briefly (its `retry` and `deferred` events), with the cause."""
        log.info(
            "step failed",
            extra={
                "message_id": self._current,
                "state": state,
                "error": StepError(Error=error, Cause=cause).reason,
            },
        )

    def _retrying(self, state: str, error: str, attempt: int, delay: float) -> None:
        wait = delay * self.retry_scale
        try:  # what waits is the StepRetry, written next: this event only tells of it
            self.services.records.note(
                self._current,
                Stage.RETRY,
                f"{state}: {error}, attempt {attempt}, waiting {wait:.1f}s",
            )
        except TransientError as failure:
            log.warning(
                "retry not on the timeline", extra={"message_id": self._current, "error": failure}
            )

    def start(self, bucket: str, key: str, envelope: Envelope) -> Execution:
        """Start one execution with the input the Start function gives it on AWS (the stored
        object and its envelope), and take it as far as it goes now; what waits for a retry is
        in the deferred queue when this returns."""
        self._current = message_id_of(key)
        document = ProcessInput(bucket=bucket, key=key, envelope=envelope)
        try:  # named by the stored object: each version of a message has its own
            execution = self.interpreter.start(
                document.model_dump(mode="json"), name=self._current + variant_of(key)
            )
        except ExecutionFailedError as failure:
            log.error(
                "execution failed", extra={"message_id": self._current, "error": failure.error}
            )
            raise
        return self._keep_waiting(execution)

    def redeliver(self, delivery: Delivery) -> Execution:
        """Run one deferred or redriven delivery again: an execution whose input is the
        delivery itself (the state machine's first Choice sends it straight to Deliver)."""
        self._current = delivery.message.message_id
        document = Redelivery(deliveries=[delivery]).model_dump(mode="json")
        # a name per deferral: the retries it waits out are named after it
        attempt = delivery.deferral.attempts if delivery.deferral else 0
        name = f"{delivery.delivery_id}.redelivery-{attempt}"
        try:
            execution = self.interpreter.start(document, name=name)
        except ExecutionFailedError as failure:
            log.error(
                "redelivery failed",
                extra={"message_id": self._current, "delivery": delivery.delivery_id},
            )
            raise failure from None
        return self._keep_waiting(execution)

    def reprocess(self, deferred: DeferredProcessing) -> Execution:
        """Run a deferred or redriven message through Process again: an execution whose input
        names the stored message and its deferral (the state machine's first Choice sends it
        to Process), named by the record (one per attempt)."""
        self._current = deferred.message_id
        document = Reprocessing(stored=deferred.stored, deferral=deferred.deferral)
        try:
            execution = self.interpreter.start(
                document.model_dump(mode="json", exclude_none=True), name=deferred.record_id
            )
        except ExecutionFailedError as failure:
            log.error(
                "reprocessing failed", extra={"message_id": self._current, "error": failure.error}
            )
            raise failure from None
        return self._keep_waiting(execution)

    def resume(self, retry: StepRetry) -> Execution:
        """A Task whose Retry interval has passed: its next attempt, and what follows."""
        self._current = retry.message_id
        try:
            execution = self.interpreter.resume(retry.execution)
        except ExecutionFailedError as failure:
            log.error(
                "execution failed",
                extra={"message_id": self._current, "state": retry.execution.state},
            )
            raise failure from None
        return self._keep_waiting(execution)

    def _keep_waiting(self, execution: Execution) -> Execution:
        """Each Task now waiting for a retry, in the deferred queue (fsynced) before this
        returns: the caller may then let go of what it ran from."""
        deferrals = self.services.deferrals
        if not execution.waiting:
            return execution
        if deferrals is None:
            raise ConfigError("the local workflow needs the deferred queue for its retries")
        now = self.services.clock.now()
        for wait in execution.waiting:
            suspended = wait.execution
            where = ".".join(f"{i.state}{i.index}" for i in suspended.items) or "-"
            count = sum(suspended.attempts.values())
            deferrals.schedule(
                StepRetry(
                    record_id=f"{suspended.name}#{where}#{suspended.state}#{count}",
                    due_at=now + timedelta(seconds=wait.seconds * self.retry_scale),
                    message_id=self._current,
                    recipients=_recipients(suspended.document),
                    error=wait.error,
                    attempt=wait.attempt,
                    execution=suspended,
                )
            )
        return execution


def _recipients(document: Any) -> list[str]:
    """The recipients of the delivery a Task works on (none for a message-level step)."""
    delivery = document.get("delivery") if isinstance(document, dict) else None
    recipients = delivery.get("recipients") if isinstance(delivery, dict) else None
    return [str(r) for r in recipients] if isinstance(recipients, list) else []
