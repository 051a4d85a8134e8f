"""The local workflow runner: the deployed state machine definition, run by the ASL
interpreter, with each Task routed to the same step code the Lambda functions call."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxgate.errors import ConfigError
from mxgate.mailmanager.template import Resolver
from mxgate.ports import Clock
from mxgate.records import Delivery, Stage, message_id_of
from mxgate.workflow.asl import ExecutionFailedError, Interpreter
from mxgate.workflow.envelope import read_envelope
from mxgate.workflow.model import ProcessInput, Redelivery
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


class _ScaledClock:
    """The services' clock, with the state machine's waits scaled (tests shorten them)."""

    def __init__(self, clock: Clock, scale: float) -> None:
        self._clock, self._scale = clock, scale

    def now(self) -> Any:
        return self._clock.now()

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds * self._scale)


class LocalWorkflow:
    def __init__(
        self, source: StateMachineSource, services: Services, retry_scale: float = 1.0
    ) -> None:
        self.services = services
        tasks = {
            resource: (lambda doc, step=STEPS[name]: step(doc, services))
            for resource, name in source.resource_steps.items()
        }
        self.interpreter = Interpreter(
            source.definition,
            tasks,
            _ScaledClock(services.clock, retry_scale),
            on_retry=self._retrying,
        )
        self._current = ""

    def _retrying(self, state: str, error: str, attempt: int, delay: float) -> None:
        self.services.records.note(
            self._current, Stage.RETRY, f"{state}: {error}, attempt {attempt}, waiting {delay:.1f}s"
        )

    def start(self, bucket: str, key: str) -> Any:
        """Run one execution to its end, with the input the Start function gives it on AWS:
        the stored object and the envelope the emulator kept beside it."""
        self._current = message_id_of(key)
        envelope = read_envelope(self.services.objects, bucket, key)
        document = ProcessInput(bucket=bucket, key=key, envelope=envelope)
        try:
            return self.interpreter.run(document.model_dump(mode="json"), name=self._current)
        except ExecutionFailedError as failure:
            log.error(
                "execution failed", extra={"message_id": self._current, "error": failure.error}
            )
            raise

    def redeliver(self, delivery: Delivery) -> Any:
        """Run one deferred or redriven delivery again: an execution whose input is the
        delivery itself (the state machine's first Choice sends it straight to Deliver)."""
        self._current = delivery.message.message_id
        document = Redelivery(deliveries=[delivery]).model_dump(mode="json")
        try:
            return self.interpreter.run(document, name=f"{delivery.delivery_id}.redelivery")
        except ExecutionFailedError as failure:
            log.error(
                "redelivery failed",
                extra={"message_id": self._current, "delivery": delivery.delivery_id},
            )
            raise failure from None
