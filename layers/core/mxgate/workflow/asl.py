"""A small interpreter for the Amazon States Language subset mxgate's state machine uses.

The local runtime runs `statemachine/*.asl.json` itself, the very definition deployed to
Step Functions, so retries, catches and dead letters behave the same on one machine. It
covers Task, Pass, Choice, Map (inline), Wait, Succeed and Fail; InputPath, Parameters,
ItemSelector, ResultSelector, ResultPath and OutputPath; Retry (with backoff, MaxDelaySeconds
and full jitter) and Catch. A test runs the same definition in moto's interpreter to keep
the two honest.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mxgate.ports import Clock

Task = Callable[[Any], Any]

_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\['([^']+)'\]")


class ExecutionFailedError(Exception):
    """The execution ended in failure: the Step Functions error name and cause."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class _StateError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


def read_path(document: Any, path: str, context: Mapping[str, Any] | None = None) -> Any:
    """Evaluate a JSONPath of the simple kind ASL definitions use (`$.a.b[0]`, `$$.Map...`)."""
    if path.startswith("$$"):
        document, path = context or {}, path[1:]
    if not path.startswith("$"):
        raise _StateError("States.Runtime", f"not a path: {path!r}")
    value = document
    position = 1
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            raise _StateError("States.Runtime", f"unsupported path {path!r}")
        name, index, quoted = match.groups()
        try:
            value = value[int(index)] if index is not None else value[name or quoted]
        except (KeyError, IndexError, TypeError) as error:
            raise _StateError("States.Runtime", f"path {path!r} not found in input") from error
        position = match.end()
    return value


def write_path(document: Any, path: str | None, result: Any) -> Any:
    """Apply a ResultPath: None discards the result, `$` replaces the input."""
    if path is None:
        return document
    if path == "$":
        return result
    # Copy only the objects along the path: the input itself is never changed, and what the
    # path does not touch is shared (documents are never mutated in place).
    target = dict(document) if isinstance(document, dict) else {}
    names = [m.group(1) or m.group(3) for m in _PATH_TOKEN.finditer(path)]
    cursor = target
    for name in names[:-1]:
        child = cursor.get(name)
        cursor[name] = dict(child) if isinstance(child, dict) else {}
        cursor = cursor[name]
    cursor[names[-1]] = result
    return target


def _intrinsic(expression: str, document: Any, context: Mapping[str, Any]) -> Any:
    match = re.fullmatch(r"States\.(\w+)\((.*)\)", expression.strip())
    if match is None:
        return read_path(document, expression, context)
    name, raw_args = match.groups()
    args = [
        _intrinsic(a.strip(), document, context)
        if a.strip().startswith(("$", "States."))
        else json.loads(a.strip().replace("'", '"'))
        for a in re.split(r",(?![^(]*\))", raw_args)
        if a.strip()
    ]
    if name == "Format":
        template, *values = args
        for value in values:
            template = template.replace("{}", str(value), 1)
        return template
    if name == "ArrayLength":
        return len(args[0])
    if name == "StringToJson":
        return json.loads(args[0])
    if name == "JsonToString":
        return json.dumps(args[0], separators=(",", ":"))
    if name == "Array":
        return list(args)
    raise _StateError("States.Runtime", f"intrinsic States.{name} is not supported locally")


def fill_template(template: Any, document: Any, context: Mapping[str, Any]) -> Any:
    """Parameters / ItemSelector / ResultSelector: keys ending in `.$` take a path's value."""
    if isinstance(template, dict):
        filled = {}
        for key, value in template.items():
            if key.endswith(".$"):
                filled[key[:-2]] = _intrinsic(value, document, context)
            else:
                filled[key] = fill_template(value, document, context)
        return filled
    if isinstance(template, list):
        return [fill_template(item, document, context) for item in template]
    return template


def _matches(error: str, names: list[str]) -> bool:
    return (
        error in names
        or "States.ALL" in names
        or ("States.TaskFailed" in names and not error.startswith("States."))
    )


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": lambda a, b: a == b,
    "BooleanEquals": lambda a, b: a == b,
    "NumericEquals": lambda a, b: a == b,
    "NumericGreaterThan": lambda a, b: a > b,
    "NumericGreaterThanEquals": lambda a, b: a >= b,
    "NumericLessThan": lambda a, b: a < b,
    "NumericLessThanEquals": lambda a, b: a <= b,
}


@dataclass
class Interpreter:
    definition: Mapping[str, Any]
    tasks: Mapping[str, Task]
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[str, str, int, float], None] | None = None  # state, error, attempt, delay

    def run(self, execution_input: Any, name: str = "local") -> Any:
        context = {"Execution": {"Name": name, "Input": execution_input}}
        try:
            return self._run_states(self.definition, execution_input, context)
        except _StateError as failure:
            raise ExecutionFailedError(failure.error, failure.cause) from None

    # --------------------------------------------------------------------------- machinery

    def _run_states(
        self, machine: Mapping[str, Any], document: Any, context: dict[str, Any]
    ) -> Any:
        states = machine["States"]
        name = machine["StartAt"]
        while True:
            state = states[name]
            document, next_name = self._run_state(name, state, document, context)
            if next_name is None:
                return document
            name = next_name

    def _run_state(
        self, name: str, state: Mapping[str, Any], document: Any, context: dict[str, Any]
    ) -> tuple[Any, str | None]:
        kind = state["Type"]
        if kind == "Succeed":
            return document, None
        if kind == "Fail":
            raise _StateError(state.get("Error", "States.Fail"), state.get("Cause", ""))
        if kind == "Choice":
            return document, self._choose(state, document)
        effective = (
            read_path(document, state["InputPath"], context) if "InputPath" in state else document
        )
        if state.get("InputPath", "$") is None:
            effective = {}
        try:
            result = self._with_retries(name, state, effective, context)
        except _StateError as failure:
            for catcher in state.get("Catch", []):
                if _matches(failure.error, catcher["ErrorEquals"]):
                    error_output = {"Error": failure.error, "Cause": failure.cause}
                    caught = write_path(document, catcher.get("ResultPath", "$"), error_output)
                    return caught, catcher["Next"]
            raise
        if "ResultSelector" in state:
            result = fill_template(state["ResultSelector"], result, context)
        output = write_path(document, state.get("ResultPath", "$"), result)
        if "OutputPath" in state:
            output = read_path(output, state["OutputPath"], context) if state["OutputPath"] else {}
        return output, (None if state.get("End") else state["Next"])

    def _with_retries(
        self, name: str, state: Mapping[str, Any], document: Any, context: dict[str, Any]
    ) -> Any:
        attempts: dict[int, int] = {}
        while True:
            try:
                return self._execute(state, document, context)
            except _StateError as failure:
                retrier_index = next(
                    (
                        i
                        for i, r in enumerate(state.get("Retry", []))
                        if _matches(failure.error, r["ErrorEquals"])
                    ),
                    None,
                )
                if retrier_index is None:
                    raise
                retrier = state["Retry"][retrier_index]
                done = attempts.get(retrier_index, 0)
                if done >= retrier.get("MaxAttempts", 3):
                    raise
                attempts[retrier_index] = done + 1
                delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** done
                if "MaxDelaySeconds" in retrier:
                    delay = min(delay, retrier["MaxDelaySeconds"])
                if retrier.get("JitterStrategy") == "FULL":
                    delay = self.rng.uniform(0, delay)
                if self.on_retry is not None:
                    self.on_retry(name, failure.error, done + 1, delay)
                self.clock.sleep(delay)

    def _execute(self, state: Mapping[str, Any], document: Any, context: dict[str, Any]) -> Any:
        kind = state["Type"]
        if kind == "Pass":
            if "Result" in state:
                return state["Result"]
            return (
                fill_template(state["Parameters"], document, context)
                if "Parameters" in state
                else document
            )
        if kind == "Wait":
            self.clock.sleep(float(state.get("Seconds", 0)))
            return document
        if kind == "Task":
            payload = (
                fill_template(state["Parameters"], document, context)
                if "Parameters" in state
                else document
            )
            task = self.tasks.get(state["Resource"])
            if task is None:
                raise _StateError(
                    "States.Runtime", f"no local task for resource {state['Resource']!r}"
                )
            try:
                return task(payload)
            except Exception as error:
                # Lambda's Cause, less what only Lambda knows (requestId, stackTrace)
                cause = json.dumps(
                    {"errorMessage": str(error), "errorType": type(error).__name__},
                    separators=(",", ":"),
                )
                raise _StateError(type(error).__name__, cause) from error
        if kind == "Map":
            items = read_path(document, state.get("ItemsPath", "$"), context)
            processor = state.get("ItemProcessor") or state["Iterator"]
            selector = state.get("ItemSelector") or state.get("Parameters")
            results = []
            for index, item in enumerate(items):
                item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
                value = fill_template(selector, document, item_context) if selector else item
                results.append(self._run_states(processor, value, item_context))
            return results
        raise _StateError("States.Runtime", f"state type {kind} is not supported locally")

    def _choose(self, state: Mapping[str, Any], document: Any) -> str:
        for rule in state["Choices"]:
            if self._rule_holds(rule, document):
                return str(rule["Next"])
        if "Default" not in state:
            raise _StateError("States.NoChoiceMatched", "no choice rule matched")
        return str(state["Default"])

    def _rule_holds(self, rule: Mapping[str, Any], document: Any) -> bool:
        if "And" in rule:
            return all(self._rule_holds(r, document) for r in rule["And"])
        if "Or" in rule:
            return any(self._rule_holds(r, document) for r in rule["Or"])
        if "Not" in rule:
            return not self._rule_holds(rule["Not"], document)
        variable = rule["Variable"]
        if "IsPresent" in rule:
            try:
                read_path(document, variable)
            except _StateError:
                return not rule["IsPresent"]
            return bool(rule["IsPresent"])
        value = read_path(document, variable)
        for comparator, test in _COMPARATORS.items():
            if comparator in rule:
                return test(value, rule[comparator])
        raise _StateError("States.Runtime", f"unsupported choice rule {sorted(rule)}")
