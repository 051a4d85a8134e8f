"""The local runner's interpreter of the Amazon States Language, reduced to what the deployed
definition (statemachine/pipeline.asl.json) uses, so that each part can be exact:

- states: Task, Pass, Choice (rules on `IsPresent` only) and Map (inline, items in order);
- reference paths (`$`, `$.a.b`) and, in Parameters, ItemSelector and ResultSelector, `$$.`
  context paths (`$$.Map.Item.Value`, `$$.Map.Item.Index`, `$$.Execution.Name`); no intrinsic
  functions;
- InputPath (Task), Parameters, ItemSelector, ResultSelector (Task) and ResultPath (`null`:
  the state's input goes on, its result is dropped);
- Retry (IntervalSeconds, MaxAttempts, BackoffRate, MaxDelaySeconds, JitterStrategy) and Catch
  (ErrorEquals, ResultPath, Next), matching error names exactly or by `States.ALL`, which never
  catches `States.Runtime`.

A Retry interval is slept out on the clock by `run`; `start` and `resume` suspend the Task
instead (the local gateway keeps the wait in its deferred queue, so no worker sleeps).

Anything else is refused when the definition is loaded, with the state and field named. To use
more of the language, add it here together with its test against moto's interpreter
(tests/integration/test_asl_parity.py): the same definition is deployed to Step Functions.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from mxgate.errors import ConfigError, MxgateError, kind_named
from mxgate.ports import Clock
from mxgate.records import MapItem, SuspendedExecution

Task = Callable[[Any], Any]

TOP_LEVEL = {"Comment", "StartAt", "States"}
STATE_FIELDS = {
    "Task": {
        "Type",
        "Comment",
        "Resource",
        "InputPath",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "Next",
        "End",
    },
    "Pass": {"Type", "Comment", "Parameters", "ResultPath", "Next", "End"},
    "Choice": {"Type", "Comment", "Choices", "Default"},
    "Map": {
        "Type",
        "Comment",
        "ItemsPath",
        "ItemSelector",
        "MaxConcurrency",
        "ItemProcessor",
        "ResultPath",
        "Next",
        "End",
    },
}
CHOICE_RULE = {"Variable", "IsPresent", "Next"}
ITEM_PROCESSOR = {"Comment", "ProcessorConfig", "StartAt", "States"}
RETRIER = {
    "Comment",
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
}
CATCHER = {"Comment", "ErrorEquals", "ResultPath", "Next"}
ALL_ERRORS = "States.ALL"
RUNTIME_ERROR = "States.Runtime"  # a fault of the definition or the data: never retried or caught

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_REFERENCE = re.compile(rf"\$(\.{_NAME})*")
_CONTEXT = re.compile(rf"\$\$(\.{_NAME})+")


class DefinitionError(ConfigError):
    """A definition that uses what this interpreter does not run."""


class ExecutionFailedError(MxgateError):
    """The execution ended in failure: the Step Functions error name and cause. Its kind is
    the error's family (a TransientError that outlasted its retries may pass later)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause
        self.kind = kind_named(error)


class _StateError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


# ----------------------------------------------------------------------------- paths


_ABSENT = object()


@cache
def _names(path: str) -> tuple[bool, tuple[str, ...]]:
    """A path once split (the definition's paths are few): whether it reads the context, and
    the names along it."""
    in_context = path.startswith("$$")
    return in_context, tuple(path.removeprefix("$" if in_context else "").split(".")[1:])


def _lookup(document: Any, path: str, context: Mapping[str, Any] | None) -> Any:
    """The value at a path, or _ABSENT (a Choice's IsPresent asks without an error)."""
    in_context, names = _names(path)
    value = (context or {}) if in_context else document
    for name in names:
        if not isinstance(value, dict) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def read_path(document: Any, path: str, context: Mapping[str, Any] | None = None) -> Any:
    """The value at a reference path (`$.a.b`) or a context path (`$$.Map.Item.Value`)."""
    value = _lookup(document, path, context)
    if value is _ABSENT:
        shown = path.removeprefix("$") if path.startswith("$$") else path
        raise _StateError(RUNTIME_ERROR, f"path {shown!r} not found in input")
    return value


def write_path(document: Any, path: str | None, result: Any) -> Any:
    """Apply a ResultPath: `$` replaces the input; `$.a.b` puts the result there; None (JSON
    null) drops the result, the input goes on. Only the objects along the path are copied:
    the input itself is never changed."""
    if path is None:
        return document
    if path == "$":
        return result
    if not isinstance(document, dict):
        raise _StateError("States.ResultPathMatchFailure", f"{path!r} needs an object as input")
    names = path.split(".")[1:]
    target = dict(document)
    cursor = target
    for name in names[:-1]:
        child = cursor.get(name)
        cursor[name] = dict(child) if isinstance(child, dict) else {}
        cursor = cursor[name]
    cursor[names[-1]] = result
    return target


def fill_template(template: Any, document: Any, context: Mapping[str, Any]) -> Any:
    """Parameters / ItemSelector: keys ending in `.$` take a path's value."""
    if isinstance(template, dict):
        return {
            key.removesuffix(".$"): (
                read_path(document, value, context)
                if key.endswith(".$")
                else fill_template(value, document, context)
            )
            for key, value in template.items()
        }
    if isinstance(template, list):
        return [fill_template(item, document, context) for item in template]
    return template


# ----------------------------------------------------------------------------- loading


def _refuse(where: str, what: str) -> DefinitionError:
    return DefinitionError(f"state machine definition, {where}: {what}, which mxgate does not run")


def _fields(where: str, given: Any, allowed: set[str]) -> None:
    if not isinstance(given, dict):
        raise DefinitionError(f"state machine definition, {where}: must be an object")
    for name in given:
        if name not in allowed:
            raise _refuse(where, f"field {name!r} (it runs: {', '.join(sorted(allowed))})")


def _path(where: str, value: Any, *, context: bool = False) -> None:
    if isinstance(value, str) and (
        _REFERENCE.fullmatch(value) or (context and _CONTEXT.fullmatch(value))
    ):
        return
    if isinstance(value, str) and value.startswith("States."):
        raise _refuse(where, f"the intrinsic function {value.split('(')[0]}")
    raise _refuse(where, f"the path {value!r} (dotted names only: $.a.b)")


def _template(where: str, template: Any) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                _path(f"{where}.{key}", value, context=True)
            else:
                _template(f"{where}.{key}", value)
    elif isinstance(template, list):
        for index, item in enumerate(template):
            _template(f"{where}[{index}]", item)


def _error_names(where: str, names: Any, last: bool) -> None:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DefinitionError(f"state machine definition, {where}.ErrorEquals: a list of names")
    for name in names:
        if name.startswith("States.") and name != ALL_ERRORS:
            raise _refuse(f"{where}.ErrorEquals", f"the error name {name!r}")
    if ALL_ERRORS in names and (len(names) > 1 or not last):
        raise DefinitionError(
            f"state machine definition, {where}: {ALL_ERRORS} must be alone, in the last one"
        )


def _listed(where: str, given: Any) -> list[Any]:
    if not isinstance(given, list):
        raise DefinitionError(f"state machine definition, {where}: must be a list")
    return given


def _retriers(where: str, retriers: Any) -> None:
    retriers = _listed(f"{where}.Retry", retriers)
    for index, retrier in enumerate(retriers):
        at = f"{where}.Retry[{index}]"
        _fields(at, retrier, RETRIER)
        _error_names(at, retrier.get("ErrorEquals"), index == len(retriers) - 1)
        if retrier.get("JitterStrategy", "NONE") not in ("FULL", "NONE"):
            raise _refuse(at, f"JitterStrategy {retrier['JitterStrategy']!r}")


def _catchers(where: str, catchers: Any, states: Mapping[str, Any]) -> None:
    catchers = _listed(f"{where}.Catch", catchers)
    for index, catcher in enumerate(catchers):
        at = f"{where}.Catch[{index}]"
        _fields(at, catcher, CATCHER)
        _error_names(at, catcher.get("ErrorEquals"), index == len(catchers) - 1)
        _path(f"{at}.ResultPath", catcher.get("ResultPath", "$"))
        _next(at, catcher.get("Next"), states)


def _next(where: str, name: Any, states: Mapping[str, Any]) -> None:
    if name not in states:
        raise DefinitionError(f"state machine definition, {where}: no state {name!r} to go to")


def check_definition(machine: Any, tasks: Mapping[str, Task], where: str = "") -> None:
    """Refuse, naming the place, anything this interpreter would not run exactly."""
    _fields(where or "top level", machine, TOP_LEVEL if not where else ITEM_PROCESSOR)
    states = machine.get("States")
    if not isinstance(states, dict) or not states:
        raise DefinitionError(f"state machine definition, {where or 'top level'}: no States")
    _next(f"{where or 'top level'}.StartAt", machine.get("StartAt"), states)
    for name, state in states.items():
        at = f"{where}States.{name}" if not where else f"{where}.States.{name}"
        kind = state.get("Type") if isinstance(state, dict) else None
        if kind not in STATE_FIELDS:
            raise _refuse(at, f"the state type {kind!r} (it runs: Task, Pass, Choice, Map)")
        _fields(at, state, STATE_FIELDS[kind])
        if kind == "Choice":
            for index, rule in enumerate(_listed(f"{at}.Choices", state.get("Choices"))):
                _fields(f"{at}.Choices[{index}]", rule, CHOICE_RULE)
                _path(f"{at}.Choices[{index}].Variable", rule.get("Variable"))
                _next(f"{at}.Choices[{index}]", rule.get("Next"), states)
            if "Default" in state:
                _next(f"{at}.Default", state["Default"], states)
            continue
        if state.get("End") is not True:
            _next(f"{at}.Next", state.get("Next"), states)
        if state.get("ResultPath", "$") is not None:
            _path(f"{at}.ResultPath", state.get("ResultPath", "$"))
        if kind == "Pass":
            _template(f"{at}.Parameters", state.get("Parameters"))
        elif kind == "Task":
            if state.get("Resource") not in tasks:
                raise DefinitionError(
                    f"state machine definition, {at}: no step runs {state.get('Resource')!r}"
                )
            _path(f"{at}.InputPath", state.get("InputPath", "$"))
            _template(f"{at}.Parameters", state.get("Parameters"))
            _template(f"{at}.ResultSelector", state.get("ResultSelector"))
            _retriers(at, state.get("Retry", []))
            _catchers(at, state.get("Catch", []), states)
        else:
            _path(f"{at}.ItemsPath", state.get("ItemsPath", "$"))
            _template(f"{at}.ItemSelector", state.get("ItemSelector"))
            processor = state.get("ItemProcessor")
            config = processor.get("ProcessorConfig", {}) if isinstance(processor, dict) else {}
            if config.get("Mode", "INLINE") != "INLINE" or set(config) - {"Mode"}:
                raise _refuse(f"{at}.ItemProcessor.ProcessorConfig", f"{config}")
            check_definition(processor, tasks, f"{at}.ItemProcessor")


# ----------------------------------------------------------------------------- running


def _matches(error: str, names: list[str]) -> bool:
    return error != RUNTIME_ERROR and (error in names or ALL_ERRORS in names)


def _maps_end(machine: Mapping[str, Any]) -> bool:
    """Whether every Map state (at any depth) ends its machine: only then can its items wait
    out Retry intervals apart from each other, since nothing after the Map reads its output."""
    for state in machine["States"].values():
        if state["Type"] == "Map" and (
            not state.get("End") or not _maps_end(state["ItemProcessor"])
        ):
            return False
    return True


@dataclass(frozen=True)
class RetryWait:
    """A Task's Retry interval, taken out of the run: `resume(execution)` goes on from there
    once `seconds` have passed."""

    execution: SuspendedExecution
    seconds: float
    error: str
    attempt: int


@dataclass(frozen=True)
class Execution:
    """How far `start` or `resume` took an execution: what it ended with (the execution's
    output; a resumed Map item's own), and the Tasks now waiting out Retry intervals."""

    output: Any = None
    waiting: list[RetryWait] = field(default_factory=list)


class _Suspended(Exception):  # noqa: N818 -- not an error: a Task waits out its Retry interval
    def __init__(self, wait: RetryWait) -> None:
        super().__init__(wait.execution.state)
        self.wait = wait


@dataclass
class _Run:
    name: str
    suspend: bool  # Retry intervals come back as RetryWait (else: the clock sleeps them)
    waiting: list[RetryWait] = field(default_factory=list)


@dataclass(frozen=True)
class _Place:
    """Where a state runs: in which run, inside which Map items, with which `$$` context."""

    run: _Run
    context: dict[str, Any]
    items: list[MapItem] = field(default_factory=list)


@dataclass
class Interpreter:
    """Runs the definition. `run` takes an execution to its end in the calling thread,
    sleeping out each Retry interval on the clock, exactly as Step Functions would; `start`
    and `resume` never sleep: a Retry interval suspends the Task (a Map's other items go
    on), and the caller keeps the RetryWait and resumes it when its time comes."""

    definition: Mapping[str, Any]
    tasks: Mapping[str, Task]
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
    on_failure: Callable[[str, str, str], None] | None = None  # state, error, cause
    on_retry: Callable[[str, str, int, float], None] | None = None  # state, error, attempt, delay

    def __post_init__(self) -> None:
        check_definition(self.definition, self.tasks)
        self._resumable = _maps_end(self.definition)

    def run(self, execution_input: Any, name: str = "local") -> Any:
        context = {"Execution": {"Name": name, "Input": execution_input}}
        place = _Place(_Run(name, suspend=False), context)
        try:
            return self._run_states(self.definition, execution_input, place)
        except _StateError as failure:
            raise ExecutionFailedError(failure.error, failure.cause) from None

    def start(self, execution_input: Any, name: str) -> Execution:
        """Run a new execution until it ends or each branch still going waits for a retry."""
        context = {"Execution": {"Name": name, "Input": execution_input}}
        return self._suspending(self.definition, execution_input, _Place(_Run(name, True), context))

    def resume(self, suspended: SuspendedExecution) -> Execution:
        """Go on from a RetryWait's Task: its next attempt, then what follows it."""
        machine: Mapping[str, Any] = self.definition
        try:
            for item in suspended.items:
                machine = machine["States"][item.state]["ItemProcessor"]
            if suspended.state not in machine["States"]:
                raise KeyError(suspended.state)
        except (KeyError, TypeError):
            where = "/".join([*(i.state for i in suspended.items), suspended.state])
            raise ExecutionFailedError(
                RUNTIME_ERROR, f"no state {where} to resume at: the definition changed"
            ) from None
        place = _Place(_Run(suspended.name, True), suspended.context, suspended.items)
        return self._suspending(
            machine,
            suspended.document,
            place,
            start=suspended.state,
            attempts=suspended.attempts,
        )

    def _suspending(
        self,
        machine: Mapping[str, Any],
        document: Any,
        place: _Place,
        *,
        start: str | None = None,
        attempts: Mapping[int, int] | None = None,
    ) -> Execution:
        if not self._resumable:
            raise DefinitionError(
                "state machine definition: a Map state that does not end its machine cannot "
                "have its items wait for retries apart; run it with Interpreter.run"
            )
        try:
            output = self._run_states(machine, document, place, start=start, attempts=attempts)
        except _Suspended as suspended:
            return Execution(None, [*place.run.waiting, suspended.wait])
        except _StateError as failure:
            raise ExecutionFailedError(failure.error, failure.cause) from None
        return Execution(output, place.run.waiting)

    def _run_states(
        self,
        machine: Mapping[str, Any],
        document: Any,
        place: _Place,
        *,
        start: str | None = None,
        attempts: Mapping[int, int] | None = None,
    ) -> Any:
        states = machine["States"]
        name = start or machine["StartAt"]
        while True:
            state = states[name]
            if state["Type"] == "Choice":
                name = self._choose(state, document)
                continue
            try:
                result = self._with_retries(name, state, document, place, attempts)
            except _StateError as failure:
                catcher = next(
                    (
                        c
                        for c in state.get("Catch", [])
                        if _matches(failure.error, c["ErrorEquals"])
                    ),
                    None,
                )
                if catcher is None:
                    raise
                error_output = {"Error": failure.error, "Cause": failure.cause}
                document = write_path(document, catcher.get("ResultPath", "$"), error_output)
                name = catcher["Next"]
                attempts = None  # a resumed state's count is its own
                continue
            attempts = None
            document = write_path(document, state.get("ResultPath", "$"), result)
            if state.get("End"):
                return document
            name = state["Next"]

    def _with_retries(
        self,
        name: str,
        state: Mapping[str, Any],
        document: Any,
        place: _Place,
        attempts_so_far: Mapping[int, int] | None,
    ) -> Any:
        attempts = dict(attempts_so_far or {})
        while True:
            try:
                return self._execute(name, state, document, place)
            except _StateError as failure:
                if self.on_failure is not None:
                    self.on_failure(name, failure.error, failure.cause)
                retriers = state.get("Retry", [])
                index = next(
                    (
                        i
                        for i, r in enumerate(retriers)
                        if _matches(failure.error, r["ErrorEquals"])
                    ),
                    None,
                )
                if index is None:
                    raise
                retrier = retriers[index]
                done = attempts.get(index, 0)
                if done >= retrier.get("MaxAttempts", 3):
                    raise
                attempts[index] = done + 1
                delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** done
                if "MaxDelaySeconds" in retrier:
                    delay = min(delay, retrier["MaxDelaySeconds"])
                if retrier.get("JitterStrategy") == "FULL":
                    delay = self.rng.uniform(0, delay)
                if self.on_retry is not None:
                    self.on_retry(name, failure.error, done + 1, delay)
                if place.run.suspend:
                    suspended = SuspendedExecution(
                        name=place.run.name,
                        items=place.items,
                        state=name,
                        document=document,
                        context=place.context,
                        attempts=attempts,
                    )
                    raise _Suspended(RetryWait(suspended, delay, failure.error, done + 1)) from None
                self.clock.sleep(delay)

    def _execute(self, name: str, state: Mapping[str, Any], document: Any, place: _Place) -> Any:
        if state["Type"] == "Map":
            return self._map(name, state, document, place)
        if state["Type"] == "Pass":
            if "Parameters" not in state:
                return document
            return fill_template(state["Parameters"], document, place.context)
        given = read_path(document, state.get("InputPath", "$"), place.context)
        payload = (
            fill_template(state["Parameters"], given, place.context)
            if "Parameters" in state
            else given
        )
        try:
            result = self.tasks[state["Resource"]](payload)
        except Exception as error:
            # Lambda's Cause, less what only Lambda knows (requestId, stackTrace)
            cause = json.dumps(
                {"errorMessage": str(error), "errorType": type(error).__name__},
                separators=(",", ":"),
            )
            raise _StateError(type(error).__name__, cause) from error
        if "ResultSelector" not in state:
            return result
        return fill_template(state["ResultSelector"], result, place.context)

    def _map(self, name: str, state: Mapping[str, Any], document: Any, place: _Place) -> Any:
        values = read_path(document, state.get("ItemsPath", "$"), place.context)
        if not isinstance(values, list):
            raise _StateError(RUNTIME_ERROR, "Map: ItemsPath does not select an array")
        selector = state.get("ItemSelector")
        results = []
        for index, item in enumerate(values):
            context = {**place.context, "Map": {"Item": {"Index": index, "Value": item}}}
            value = fill_template(selector, document, context) if selector else item
            inside = _Place(place.run, context, [*place.items, MapItem(state=name, index=index)])
            try:
                results.append(self._run_states(state["ItemProcessor"], value, inside))
            except _Suspended as suspended:  # this item waits; the others go on
                place.run.waiting.append(suspended.wait)
                results.append({"RetryWait": {"State": suspended.wait.execution.state}})
        return results

    def _choose(self, state: Mapping[str, Any], document: Any) -> str:
        for rule in state["Choices"]:
            present = _lookup(document, rule["Variable"], None) is not _ABSENT
            if present is bool(rule["IsPresent"]):
                return str(rule["Next"])
        if "Default" not in state:
            raise _StateError("States.NoChoiceMatched", "no choice rule matched")
        return str(state["Default"])
