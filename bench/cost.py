"""What the pipeline costs per million messages, from public prices and this run's measurements.

Messages go through the Lambda handlers in process against moto, on the stack template.yaml
defines (mxgate.sandbox.stack): the Start function for each of Mail Manager's two halves (the
InvokeLambda envelope, then the WriteToS3 object's S3 event), which joins them and starts the
execution, then Process and Deliver for each planned delivery, as that execution runs them
(moto records the start; the bench runs the steps itself, so each is metered on its own). The
arrival check the first half schedules (an SQS message read 15 minutes later, ten to a batch)
is counted at its send only. Every AWS request the adapters make is counted (DynamoDB request units from
the items actually written and read), every handler timed; the memory sizes come from
template.yaml, the state transitions of a Standard workflow from statemachine/pipeline.asl.json.
SES sending and Mail Manager are priced apart (not here).

Lambda durations are estimated from this run: each handler is timed, the time spent inside AWS
calls (moto answering in process) is taken out, what is left (the handler's own work) is scaled
to the CPU share Lambda gives the function's memory size (a full vCPU at 1,769 MB), and an
assumed network round trip per AWS call is added (API_LATENCY_S). Prints figures; never a
pass/fail test.

    .venv/bin/python bench/cost.py [--messages 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from mxgate.ids import new_message_id  # noqa: E402
from mxgate.sandbox.stack import MOTO_CONFIG, REGION  # noqa: E402
from mxgate.workflow.object_created import object_created_event  # noqa: E402
from tests.awsstack import TEMPLATE, create_stack  # noqa: E402

# --------------------------------------------------------------------------- public prices
# On-demand list prices, us-east-1, as published on the AWS pricing pages named below
# (figures as listed in 2025; DynamoDB on-demand after the 50% cut of 2024-11-01).
# Re-check before quoting: https://aws.amazon.com/<service>/pricing/
LAMBDA_REQUEST = 0.20 / 1e6  # aws.amazon.com/lambda/pricing: $0.20 per 1M requests
LAMBDA_GB_SECOND = {  # same page, first 6 billion (x86) / 7.5 billion (Arm) GB-s a month
    "arm64": 0.0000133334,
    "x86_64": 0.0000166667,
}
EXPRESS_REQUEST = 1.00 / 1e6  # aws.amazon.com/step-functions/pricing: $1.00 per 1M requests
EXPRESS_GB_SECOND = 0.00001667  # same page: $0.06 per GB-hour, first 1,000 GB-hours a month
EXPRESS_MEMORY_CHUNK_GB = 64 / 1024  # billed in 64 MB chunks (an execution this small uses one)
EXPRESS_ROUNDING_S = 0.1  # duration rounded up to the next 100 ms
STANDARD_TRANSITION = 0.025 / 1000  # same page: $0.025 per 1,000 state transitions
S3_PUT = 0.005 / 1000  # aws.amazon.com/s3/pricing, S3 Standard: PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1000  # same page: GET, SELECT and all other requests (HEAD included)
S3_STORAGE_GB_MONTH = 0.023  # same page: first 50 TB a month
DYNAMODB_WRU = 0.625 / 1e6  # aws.amazon.com/dynamodb/pricing/on-demand: per write request unit
DYNAMODB_RRU = 0.125 / 1e6  # same page: per read request unit
SQS_REQUEST = 0.40 / 1e6  # aws.amazon.com/sqs/pricing: standard queue, per request
EVENTBRIDGE_CUSTOM_EVENT = 1.00 / 1e6  # aws.amazon.com/eventbridge/pricing: custom events
# (S3's own events to the default bus, and the rule starting the state machine, cost nothing)
CLOUDWATCH_LOGS_GB = 0.50  # aws.amazon.com/cloudwatch/pricing: log ingestion, Standard class

# --------------------------------------------------------------------------- assumptions
# Typical in-region round trips, not measured here (no AWS account in this run).
API_LATENCY_S = {"s3": 0.015, "dynamodb": 0.008, "sesv2": 0.060, "events": 0.015, "sqs": 0.010}
TASK_OVERHEAD_S = 0.030  # Step Functions -> Lambda invoke round trip per Task, not measured here
FULL_VCPU_MB = 1769  # Lambda gives one vCPU at 1,769 MB, proportionally less below
PLATFORM_LOG_BYTES = 350  # Lambda's START, END and REPORT lines per invocation
RAW_RETENTION_MONTHS = 1.0  # RawMailRetentionDays=30 in template.yaml
TARGET_PER_MILLION = 5.00

WRITE_UNIT, READ_UNIT = 1024, 4096


# --------------------------------------------------------------------------- counting


def item_size(value: Any, name: str = "") -> int:
    """DynamoDB's item size rules: names and values in bytes, numbers about half their digits."""
    size = len(name.encode())
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind == "S":
            return size + len(inner.encode())
        if kind == "N":
            return size + len(inner.strip("-").replace(".", "")) // 2 + 1
        if kind == "B":
            return size + len(inner)
        if kind in {"BOOL", "NULL"}:
            return size + 1
        if kind == "L":
            return size + 3 + sum(item_size(v) + 1 for v in inner)
        if kind == "M":
            return size + 3 + sum(item_size(v, k) + 1 for k, v in inner.items())
    if isinstance(value, dict):  # a whole item
        return size + sum(item_size(v, k) for k, v in value.items())
    return size


@dataclass
class Meter:
    """AWS requests made by the handlers, with DynamoDB request units."""

    calls: Counter[str] = field(default_factory=Counter)
    write_units: float = 0.0
    read_units: float = 0.0
    logged_bytes: int = 0
    step: str = ""  # the handler running now
    step_calls: Counter[str] = field(default_factory=Counter)  # AWS calls per step
    latency: Counter[str] = field(default_factory=Counter)  # assumed network seconds per step
    inside_calls: Counter[str] = field(default_factory=Counter)  # seconds in moto, per step

    def before_call(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        service, operation = model.service_model.service_name, model.name
        self.calls[f"{service}.{operation}"] += 1
        self.step_calls[self.step] += 1
        self.latency[self.step] += API_LATENCY_S.get(service, 0.010)
        context["started"] = time.perf_counter()
        if service != "dynamodb":
            return
        context["consistent_read"] = params.get("ConsistentRead", False)
        if operation == "PutItem":
            self.write_units += math.ceil(item_size(params["Item"]) / WRITE_UNIT)
        elif operation == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    self.write_units += math.ceil(item_size(item) / WRITE_UNIT) if item else 1
        elif operation in {"DeleteItem", "UpdateItem"}:
            self.write_units += 1

    def after_call(self, model: Any, parsed: Any, context: dict[str, Any], **_: Any) -> None:
        self.inside_calls[self.step] += time.perf_counter() - context.get("started", 0.0)
        if model.service_model.service_name != "dynamodb":
            return
        per_unit = 1.0 if context.get("consistent_read") else 0.5
        if model.name == "GetItem":
            size = item_size(parsed.get("Item", {}))
            self.read_units += max(1, math.ceil(size / READ_UNIT)) * per_unit
        elif model.name == "Query":
            size = sum(item_size(i) for i in parsed.get("Items", []))
            self.read_units += max(1, math.ceil(size / READ_UNIT)) * per_unit

    def count(self, prefix: str) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(prefix))


@contextlib.contextmanager
def metered(meter: Meter) -> Iterator[None]:
    events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]
    events.register("before-parameter-build.*.*", meter.before_call)
    events.register("after-call.*.*", meter.after_call)
    try:
        yield
    finally:
        events.unregister("before-parameter-build.*.*", meter.before_call)
        events.unregister("after-call.*.*", meter.after_call)


# --------------------------------------------------------------------------- running


@dataclass
class Profile:
    name: str
    to: str
    cc: str = ""

    @property
    def recipients(self) -> list[str]:
        return [address for _, address in getaddresses([self.to, self.cc]) if address]

    def message(self, n: int) -> bytes:
        cc = f"Cc: {self.cc}\r\n" if self.cc else ""
        return (
            "X-Mxgate-Loop: mxgate\r\n"
            f"From: Supplier <orders@supplier.example>\r\nTo: {self.to}\r\n{cc}"
            f"Subject: Delivery note {n}\r\nDate: Mon, 30 Nov 2026 08:00:00 +0100\r\n"
            f"Message-ID: <note-{n}@supplier.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            + f"Delivery note {n}: 12 pallets of oats, 4 of barley.\r\n"
            * 40
        ).encode()


@dataclass
class Run:
    profile: Profile
    messages: int
    meter: Meter
    durations: dict[str, list[float]]  # step -> seconds, warm invocations
    invocations: dict[str, int]  # step -> invocations, the cold one included
    cold: dict[str, float]  # step -> seconds of its first invocation
    memory_mb: dict[str, int]
    architecture: str
    deliveries: float  # per message
    message_bytes: float
    sends: int


def halves(bucket: str, key: str, profile: Profile, size: int) -> list[dict[str, Any]]:
    """Mail Manager's two halves of a stored message: its InvokeLambda event (the canonical
    one, with this message's id and envelope) and the S3 event of its object."""
    event = json.loads((REPO / "events" / "ses-receiving.json").read_text())
    ses = event["Records"][0]["ses"]
    ses["mail"]["messageId"] = key.removeprefix("raw/")
    ses["mail"]["source"] = "orders@supplier.example"
    ses["receipt"]["recipients"] = profile.recipients
    return [event, object_created_event(bucket, key, size, time_now(), region=REGION)]


def run(profile: Profile, messages: int) -> Run:
    # executions are recorded, not run: the bench runs (and meters) each step itself
    with mock_aws(config={**MOTO_CONFIG, "stepfunctions": {"execute_state_machine": False}}):
        stack = create_stack()
        machine = stack.deploy_state_machine()
        sfn = boto3.client("stepfunctions", region_name=REGION)
        # SES delivers for verified senders only; a sender policy is the Deliver step's business
        boto3.client("sesv2", region_name=REGION).create_email_identity(
            EmailIdentity="supplier.example"
        )
        bucket = stack.resource("RawMailBucket")
        s3 = boto3.client("s3", region_name=REGION)
        keys, sizes = [], []
        for n in range(messages):
            body = profile.message(n)
            key = f"raw/{new_message_id(time_now())}"
            s3.put_object(Bucket=bucket, Key=key, Body=body)  # Mail Manager's WriteToS3
            keys.append(key)
            sizes.append(len(body))
        meter, deliveries, output = Meter(), 0, io.StringIO()
        with metered(meter), contextlib.redirect_stdout(output):
            for key, size in zip(keys, sizes, strict=True):
                meter.step = "start"
                for half in halves(bucket, key, profile, size):
                    stack.invoke("start", half)
                meter.step = ""
                execution = f"{machine.replace(':stateMachine:', ':execution:')}:{key[4:]}"
                started = json.loads(sfn.describe_execution(executionArn=execution)["input"])
                meter.step = "process"
                planned = stack.invoke("process", started)
                meter.step = "deliver"
                for delivery in planned["deliveries"]:
                    stack.invoke("deliver", {"delivery": delivery})
                    deliveries += 1
        meter.logged_bytes = len(output.getvalue().encode())
        from moto.ses.models import ses_backends  # noqa: PLC0415

        sends = len(ses_backends["123456789012"][REGION].sent_messages)
        durations, invocations, cold, memory = {}, {}, {}, {}
        for function in stack.functions.values():
            step = function.handler_file.parent.name
            if function.durations:
                cold[step] = function.durations[0]
                durations[step] = function.durations[1:] or function.durations
                invocations[step] = len(function.durations)
                memory[step] = function.memory_mb
        architecture = stack.resolver.resolve(
            stack.resolver.template["Globals"]["Function"]["Architectures"], "Globals"
        )[0]
    return Run(
        profile,
        messages,
        meter,
        durations,
        invocations,
        cold,
        memory,
        architecture,
        deliveries / messages,
        statistics.mean(sizes),
        sends,
    )


def time_now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


# --------------------------------------------------------------------------- the workflow


def transitions(deliveries: float) -> float:
    """State transitions of one execution on its success path, counted from the ASL: every
    state entered, and a Map's inner states once per item."""
    definition = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())

    def walk(machine: dict[str, Any]) -> float:
        count, name = 0.0, machine["StartAt"]
        while name is not None:
            state = machine["States"][name]
            count += 1
            if state["Type"] == "Map":
                count += deliveries * walk(state.get("ItemProcessor") or state["Iterator"])
            if state["Type"] == "Choice":
                name = state.get("Default") or state["Choices"][0]["Next"]
            else:
                name = (
                    None
                    if state.get("End") or state["Type"] in {"Succeed", "Fail"}
                    else (state["Next"])
                )
        return count

    return walk(definition)


# --------------------------------------------------------------------------- pricing


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


@dataclass(frozen=True)
class Timing:
    measured: float  # mean warm handler time in this run, seconds
    in_moto: float  # of which inside AWS calls answered by moto in process
    on_lambda: float  # estimated billed time on Lambda


def timings(result: Run) -> dict[str, Timing]:
    found = {}
    for step, durations in result.durations.items():
        invocations = result.invocations[step]
        in_moto = result.meter.inside_calls[step] / invocations
        own = max(0.0, mean(durations) - in_moto)
        cpu_factor = max(1.0, FULL_VCPU_MB / result.memory_mb[step])
        latency = result.meter.latency[step] / invocations
        found[step] = Timing(mean(durations), in_moto, own * cpu_factor + latency)
    return found


def price(result: Run) -> dict[str, float]:
    """Dollars per million messages, line by line."""
    m, per = result.meter, 1e6 / result.messages
    per_message = {"start": 2.0, "process": 1.0}  # Start: once for each of the two halves
    calls = {step: per_message.get(step, result.deliveries) for step in result.durations}
    times = timings(result)
    gb_second = LAMBDA_GB_SECOND[result.architecture]
    lambda_duration = sum(
        calls[step]
        * math.ceil(times[step].on_lambda * 1000)  # billed per millisecond
        / 1000
        * result.memory_mb[step]
        / 1024
        * gb_second
        for step in calls
    )
    # one execution: Process, then the Map's deliveries side by side (Start runs before it)
    inside = {step: t for step, t in times.items() if step != "start"}
    execution_s = sum(t.on_lambda for t in inside.values()) + len(inside) * TASK_OVERHEAD_S
    billed_s = math.ceil(execution_s / EXPRESS_ROUNDING_S) * EXPRESS_ROUNDING_S
    return {
        "Lambda requests": sum(calls.values()) * LAMBDA_REQUEST * 1e6,
        "Lambda duration": lambda_duration * 1e6,
        "Step Functions Express requests": EXPRESS_REQUEST * 1e6,
        "Step Functions Express duration": (
            billed_s * EXPRESS_MEMORY_CHUNK_GB * EXPRESS_GB_SECOND * 1e6
        ),
        "S3 GET/HEAD by the functions": (m.count("s3.Get") + m.count("s3.Head")) * S3_GET * per,
        "S3 PUT by the functions": m.count("s3.Put") * S3_PUT * per,
        "DynamoDB writes": m.write_units * DYNAMODB_WRU * per,
        "DynamoDB reads": m.read_units * DYNAMODB_RRU * per,
    }


def extras(result: Run) -> dict[str, float]:
    m, per = result.meter, 1e6 / result.messages
    invocations = 3 + result.deliveries  # Start twice, Process, Deliver per delivery
    log_bytes = m.logged_bytes / result.messages + invocations * PLATFORM_LOG_BYTES
    return {
        "S3 PUT by Mail Manager's WriteToS3 (one per message)": S3_PUT * 1e6,
        f"S3 storage, {RAW_RETENTION_MONTHS:g} month at {result.message_bytes / 1024:.1f} KB": (
            result.message_bytes / 1024**3 * S3_STORAGE_GB_MONTH * RAW_RETENTION_MONTHS * 1e6
        ),
        f"CloudWatch Logs ingestion ({log_bytes:.0f} B a message)": (
            log_bytes / 1024**3 * CLOUDWATCH_LOGS_GB * 1e6
        ),
        "SQS and EventBridge (arrival checks, dead letters, app events)": (
            m.count("sqs.") * SQS_REQUEST + m.count("events.PutEvents") * EVENTBRIDGE_CUSTOM_EVENT
        )
        * per,
    }


def report(result: Run) -> dict[str, float]:
    m = result.meter
    print(
        f"\n== {result.profile.name}: {result.messages} messages, "
        f"{result.deliveries:g} deliveries each, {result.sends} SES sends in all"
    )
    print("  AWS requests per message:")
    for name, n in sorted(m.calls.items()):
        print(f"    {name:<32} {n / result.messages:6.2f}")
    print(
        f"    DynamoDB write units {m.write_units / result.messages:.2f}, "
        f"read units {m.read_units / result.messages:.2f}"
    )
    print("  handler time (warm mean; cold first call), its part inside moto, and the estimate on")
    print("  Lambda (own work scaled to the CPU share of its memory, plus assumed API latency):")
    times = timings(result)
    for step in sorted(result.durations):
        t = times[step]
        print(
            f"    {step:<10} {t.measured * 1000:6.1f} ms ({result.cold[step] * 1000:.0f} ms cold), "
            f"{t.in_moto * 1000:5.1f} ms in moto -> {t.on_lambda * 1000:6.1f} ms at "
            f"{result.memory_mb[step]} MB {result.architecture}"
        )
    costs = price(result)
    print("  per million messages:")
    for line, dollars in costs.items():
        print(f"    {line:<40} ${dollars:8.2f}")
    total = sum(costs.values())
    print(
        f"    {'pipeline (Lambda, Express, S3, DynamoDB)':<40} ${total:8.2f}"
        f"   (target ${TARGET_PER_MILLION:.2f})"
    )
    print("  billed besides, per million messages:")
    other = extras(result)
    for line, dollars in other.items():
        print(f"    {line:<56} ${dollars:8.2f}")
    standard = transitions(result.deliveries)
    workflow = costs["Step Functions Express requests"] + costs["Step Functions Express duration"]
    print(
        f"  Express vs Standard: {standard:g} state transitions an execution "
        f"(Retry attempts add one each) -> Standard ${standard * STANDARD_TRANSITION * 1e6:.2f}"
        f" per million messages, Express ${workflow:.2f}"
    )
    return {
        "pipeline": total,
        "with_ingress_put": total + other["S3 PUT by Mail Manager's WriteToS3 (one per message)"],
        "standard": standard * STANDARD_TRANSITION * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    print(f"mxgate pipeline cost model (template {TEMPLATE.name}; prices us-east-1, on demand)")
    started = time.perf_counter()
    profiles = [
        Profile("one recipient (the usual message)", "Alice Martin <alice@nutrition.co>"),
        Profile(
            "three recipients on two hosts",
            "alice@nutrition.co, carol@nutrition.co",
            cc="eve@nutrition.co",
        ),
    ]
    results = [report(run(profile, args.messages)) for profile in profiles]
    usual = results[0]
    print(
        f"\nThe usual message: ${usual['pipeline']:.2f} per million for the pipeline after "
        f"ingress, ${usual['with_ingress_put']:.2f} with WriteToS3's PUT; a Standard workflow "
        f"would cost ${usual['standard']:.2f} in state transitions alone. "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
