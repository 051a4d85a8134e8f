"""The local ASL interpreter: paths, Map, Retry with backoff, Catch, Choice."""

from __future__ import annotations

import json
import random

import pytest

from mxgate.errors import PermanentError, TransientError
from mxgate.workflow.asl import ExecutionFailedError, Interpreter, read_path, write_path
from tests.fakes import ManualClock
from tests.support import REPO


def machine(states: dict, start: str) -> dict:
    return {"StartAt": start, "States": states}


def test_paths_read_and_write():
    document = {"a": {"b": [10, {"c": "x"}]}, "k": 1}
    assert read_path(document, "$.a.b[1].c") == "x"
    assert read_path(document, "$['k']") == 1
    assert read_path({}, "$$.Map.Item.Index", {"Map": {"Item": {"Index": 3}}}) == 3
    assert write_path(document, "$.result", 5)["result"] == 5
    assert write_path(document, "$", 5) == 5
    assert write_path(document, None, 5) == document


def test_task_parameters_result_path_and_output_path():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Parameters": {
                    "x.$": "$.input",
                    "fixed": 1,
                    "label.$": "States.Format('n={}', $.input)",
                },
                "ResultPath": "$.out",
                "OutputPath": "$.out",
                "End": True,
            },
        },
        "T",
    )
    interpreter = Interpreter(definition, {"r": lambda doc: {**doc, "seen": True}}, ManualClock())
    assert interpreter.run({"input": 7}) == {"x": 7, "fixed": 1, "label": "n=7", "seen": True}


def test_retry_backs_off_then_succeeds():
    calls = []

    def flaky(doc):
        calls.append(doc)
        if len(calls) < 3:
            raise TransientError("try later")
        return "done"

    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [
                    {
                        "ErrorEquals": ["TransientError"],
                        "IntervalSeconds": 2,
                        "MaxAttempts": 3,
                        "BackoffRate": 3,
                    }
                ],
            },
        },
        "T",
    )
    clock = ManualClock()
    assert Interpreter(definition, {"r": flaky}, clock).run({}) == "done"
    assert clock.slept == [2, 6]


def test_retry_exhausted_then_caught_with_the_error_document():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "Next": "Done",
                "Retry": [
                    {
                        "ErrorEquals": ["TransientError"],
                        "IntervalSeconds": 1,
                        "MaxAttempts": 2,
                        "MaxDelaySeconds": 1.5,
                    }
                ],
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}
                ],
            },
            "Caught": {"Type": "Pass", "End": True},
            "Done": {"Type": "Succeed"},
        },
        "T",
    )
    clock = ManualClock()

    def always(doc):
        raise TransientError("still down")

    result = Interpreter(definition, {"r": always}, clock).run({"id": 1})
    assert result["id"] == 1
    assert result["error"]["Error"] == "TransientError"
    assert json.loads(result["error"]["Cause"]) == {
        "errorType": "TransientError",
        "errorMessage": "still down",
    }
    assert clock.slept == [1, 1.5]  # 2 capped by MaxDelaySeconds


def test_permanent_error_is_not_retried():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [{"ErrorEquals": ["TransientError"], "MaxAttempts": 5}],
            },
        },
        "T",
    )
    clock = ManualClock()

    def broken(doc):
        raise PermanentError("550 no such user")

    with pytest.raises(ExecutionFailedError) as failure:
        Interpreter(definition, {"r": broken}, clock).run({})
    assert failure.value.error == "PermanentError"
    assert clock.slept == []


def test_full_jitter_stays_within_the_backoff():
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Retry": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "IntervalSeconds": 4,
                        "MaxAttempts": 4,
                        "BackoffRate": 2,
                        "JitterStrategy": "FULL",
                    }
                ],
            },
        },
        "T",
    )
    clock = ManualClock()

    def failing(doc):
        raise TransientError("x")

    with pytest.raises(ExecutionFailedError):
        Interpreter(definition, {"r": failing}, clock, rng=random.Random(7)).run({})
    assert len(clock.slept) == 4
    assert all(0 <= s <= limit for s, limit in zip(clock.slept, [4, 8, 16, 32], strict=True))


def test_map_runs_each_item_with_its_selector_and_catches_per_item():
    definition = machine(
        {
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {"value.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
                "ItemProcessor": machine(
                    {
                        "Work": {
                            "Type": "Task",
                            "Resource": "r",
                            "End": True,
                            "Catch": [
                                {
                                    "ErrorEquals": ["States.ALL"],
                                    "ResultPath": "$.error",
                                    "Next": "Failed",
                                }
                            ],
                        },
                        "Failed": {
                            "Type": "Pass",
                            "Parameters": {"failed.$": "$.value"},
                            "End": True,
                        },
                    },
                    "Work",
                ),
                "ResultPath": "$.results",
                "End": True,
            },
        },
        "M",
    )

    def work(doc):
        if doc["value"] == "bad":
            raise PermanentError("no")
        return {"ok": doc["value"], "at": doc["index"]}

    result = Interpreter(definition, {"r": work}, ManualClock()).run({"items": ["a", "bad", "c"]})
    assert result["results"] == [{"ok": "a", "at": 0}, {"failed": "bad"}, {"ok": "c", "at": 2}]


def test_choice_and_fail_states():
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Default": "No",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.n", "NumericGreaterThan": 2},
                            {"Not": {"Variable": "$.tag", "StringEquals": "skip"}},
                        ],
                        "Next": "Yes",
                    }
                ],
            },
            "Yes": {"Type": "Pass", "Result": "big", "End": True},
            "No": {"Type": "Fail", "Error": "Small", "Cause": "n too small"},
        },
        "C",
    )
    interpreter = Interpreter(definition, {}, ManualClock())
    assert interpreter.run({"n": 3, "tag": "x"}) == "big"
    with pytest.raises(ExecutionFailedError) as failure:
        interpreter.run({"n": 1, "tag": "x"})
    assert (failure.value.error, failure.value.cause) == ("Small", "n too small")


def test_the_deployed_definition_uses_only_what_the_interpreter_knows():
    definition = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())
    supported = {"Task", "Pass", "Choice", "Map", "Wait", "Succeed", "Fail"}

    def walk(states: dict) -> None:
        for state in states.values():
            assert state["Type"] in supported
            if state["Type"] == "Map":
                walk((state.get("ItemProcessor") or state["Iterator"])["States"])

    walk(definition["States"])
