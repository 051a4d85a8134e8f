"""template.yaml's stack in moto, in process: the resources created from their definitions in
the template, each function's environment resolved from it, the handlers invoked as Lambda
would invoke them. Tests and bench/cost.py use it, so neither keeps its own copy of a name.

Physical names are what the local resolver gives (`mxgate-rawmailbucket` for the bucket, as the
local runtime names it) or `<stack>-<logical id>`; the canonical events in events/ use them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mxgate.adapters.aws import bootstrap
from mxgate.mailmanager.template import Resolver, read_samconfig_parameters, read_template
from tests.support import quiet_dns

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
EVENTS = REPO / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
LAYER_MOUNT = "/opt/"  # where Lambda mounts a layer's content

# What `mock_aws` needs to run the state machine with the real handlers (TOOLING.md).
MOTO_CONFIG: Any = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}


def fake_credentials(patch: pytest.MonkeyPatch) -> None:
    """Credentials and a region no real AWS account answers to (moto, botocore's Stubber)."""
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@contextlib.contextmanager
def moto_account() -> Iterator[None]:
    """One moto account for a while (a module's tests): credentials, region, and Step
    Functions that executes (MOTO_CONFIG), outside any test's monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        fake_credentials(patch)
        with mock_aws(config=MOTO_CONFIG):
            yield


def canonical_event(name: str) -> Any:
    """One of the canonical payloads in events/ (`events/<name>.json`)."""
    return json.loads((EVENTS / f"{name}.json").read_text())


def stack_name() -> str:
    import tomllib  # noqa: PLC0415

    config = tomllib.loads(SAMCONFIG.read_text())
    return str(config["default"]["global"]["parameters"]["stack_name"])


@dataclass
class StackResolver(Resolver):
    """The local resolver, with the physical names and attributes of what moto created."""

    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def ref(self, name: str, where: str) -> Any:
        if name in self.physical:
            return self.physical[name]
        return super().ref(name, where)

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        known = self.attributes.get((logical_id, attribute))
        return known if known is not None else super().get_att(logical_id, attribute, where)


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as `context` (the fields powertools reads)."""

    function_name: str
    memory_limit_in_mb: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Function:
    """One AWS::Serverless::Function of the template, as its own Lambda "container"."""

    logical_id: str
    name: str
    handler_file: Path
    memory_mb: int
    timeout: int
    environment: dict[str, str]
    module: ModuleType | None = None
    durations: list[float] = field(default_factory=list)  # seconds, per invocation


def _resolved_globals(resolver: Resolver) -> dict[str, Any]:
    function_globals = (resolver.template.get("Globals") or {}).get("Function") or {}
    return dict(resolver.resolve(function_globals, "Globals.Function"))


class Stack:
    """The template's resources in the active moto mock (create with `Stack.create()`)."""

    def __init__(self, resolver: StackResolver, functions: dict[str, Function]) -> None:
        self.resolver = resolver
        self.functions = functions
        self._lock = threading.Lock()  # one invocation at a time, as one container would
        self._routes = contextlib.ExitStack()  # undoes the routing of moto's Lambda invoke

    # ----------------------------------------------------------------------- building

    @classmethod
    def create(cls) -> Stack:
        """Create the bucket, table, queues and SES identity as the template defines them."""
        template = read_template(TEMPLATE)
        resolver = StackResolver(
            template, read_samconfig_parameters(SAMCONFIG), REGION, ACCOUNT, stack_name()
        )
        for logical_id, kind in _types(template).items():
            creator = _CREATORS.get(kind)
            if creator is not None and resolver.resource_enabled(logical_id):
                creator(resolver, logical_id)
        functions = {
            logical_id: _function(resolver, logical_id)
            for logical_id, kind in _types(template).items()
            if kind == "AWS::Serverless::Function"
        }
        bootstrap.settings.cache_clear()
        bootstrap.services.cache_clear()
        return cls(resolver, functions)

    def resource(self, logical_id: str) -> str:
        """The physical name (or URL, for a queue) of a resource."""
        return self.resolver.physical[logical_id]

    def properties(self, logical_id: str) -> dict[str, Any]:
        resource = self.resolver.resources[logical_id]
        resolved = self.resolver.resolve(resource.get("Properties") or {}, logical_id)
        return dict(resolved)

    def parameter(self, name: str) -> str:
        return str(self.resolver.values[name])

    # ----------------------------------------------------------------------- invoking

    def function_by_code(self, step: str) -> Function:
        """The function whose CodeUri is functions/<step>/."""
        for function in self.functions.values():
            if function.handler_file.parent.name == step:
                return function
        raise KeyError(step)

    def invoke(self, step: str, event: Any) -> Any:
        """Invoke the handler of functions/<step>/ with its own environment, as Lambda does."""
        function = self.function_by_code(step)
        with self._lock, _environment(function.environment):
            module = self._load(function)
            context = LambdaContext(function.name, function.memory_mb)
            started = time.perf_counter()
            try:
                return module.handler(json.loads(json.dumps(event)), context)
            finally:
                function.durations.append(time.perf_counter() - started)

    def _load(self, function: Function) -> ModuleType:
        """Import app.py once per function; its services are cached per function, as each
        function's container would cache them (the real composition root builds them)."""
        if function.module is None:
            spec = importlib.util.spec_from_file_location(
                f"mxgate_function_{function.handler_file.parent.name}", function.handler_file
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "services"):
                module.services = functools.cache(bootstrap.services.__wrapped__)
            function.module = module
        return function.module

    # ----------------------------------------------------------------------- the workflow

    def deploy_state_machine(self, invoke: Callable[[str, Any], Any] | None = None) -> str:
        """Create the functions in moto's Lambda and the state machine from its DefinitionUri,
        with moto's Lambda invoke routed to the real handlers; returns the machine's ARN."""
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName=f"{self.resolver.stack}-role", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "")
        lambdas = boto3.client("lambda", region_name=REGION)
        by_name: dict[str, str] = {}
        for logical_id, function in self.functions.items():
            arn = lambdas.create_function(
                FunctionName=function.name,
                Runtime="python3.13",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": code.getvalue()},
                MemorySize=function.memory_mb,
                Timeout=function.timeout,
            )["FunctionArn"]
            self.resolver.attributes[(logical_id, "Arn")] = arn
            by_name[function.name] = function.handler_file.parent.name
        call = invoke or self.invoke
        routes = {name: partial_step(call, step) for name, step in by_name.items()}
        self._routes.enter_context(lambda_invocations_routed(routes))

        machine_id, machine = next(
            (name, r)
            for name, r in self.resolver.resources.items()
            if r["Type"] == "AWS::Serverless::StateMachine"
        )
        properties = machine["Properties"]
        definition = (TEMPLATE.parent / properties["DefinitionUri"]).read_text()
        substitutions = self.resolver.resolve(
            properties.get("DefinitionSubstitutions") or {}, machine_id
        )
        for variable, value in substitutions.items():
            definition = definition.replace(f"${{{variable}}}", str(value))
        return boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name=f"{self.resolver.stack}-{machine_id}",
            definition=definition,
            roleArn=role,
            type=properties.get("Type", "STANDARD"),
        )["stateMachineArn"]

    def close(self) -> None:
        self._routes.close()


def partial_step(call: Callable[[str, Any], Any], step: str) -> Callable[[Any], Any]:
    return lambda document: call(step, document)


@contextlib.contextmanager
def lambda_invocations_routed(handlers: Mapping[str, Callable[[Any], Any]]) -> Iterator[None]:
    """moto's Lambda invoke answered by Python callables, by function name, as the Lambda
    runtime answers: the result as JSON, or on an exception its errorType and errorMessage
    with `x-amz-function-error`, so Retry and Catch see the error's name."""
    from moto.awslambda_simple.models import LambdaSimpleBackend  # noqa: PLC0415

    def route(
        backend: Any,
        function_name: str,
        qualifier: Any,
        body: Any,
        headers: Any,
        response_headers: dict[str, str],
    ) -> bytes:
        handler = handlers[function_name.rsplit(":", 1)[-1]]
        try:
            return json.dumps(handler(json.loads(body))).encode()
        except Exception as error:  # noqa: BLE001 -- as the Lambda runtime reports it
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "requestId": str(uuid.uuid4()),
                    "stackTrace": [],
                }
            ).encode()

    original = LambdaSimpleBackend.invoke
    LambdaSimpleBackend.invoke = route  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]


def run_execution(machine_arn: str, execution_input: Any, name: str, timeout: float = 60) -> Any:
    """Start one execution (always named: moto needs it) and wait for its end."""
    client = boto3.client("stepfunctions", region_name=REGION)
    arn = client.start_execution(
        stateMachineArn=machine_arn, name=name, input=json.dumps(execution_input)
    )["executionArn"]
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {name} still running after {timeout}s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- resources


def _types(template: Mapping[str, Any]) -> dict[str, str]:
    return {name: r.get("Type", "") for name, r in template["Resources"].items()}


def _bucket(resolver: StackResolver, logical_id: str) -> None:
    name = resolver.ref(logical_id, logical_id)  # the resolver's local name for the bucket
    properties = resolver.resolve(resolver.resources[logical_id].get("Properties") or {}, "")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=name)
    if "BucketEncryption" in properties:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"]}
                    for r in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in properties:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"]
        )
    rules = (properties.get("LifecycleConfiguration") or {}).get("Rules") or []
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": r["Id"],
                        "Status": r["Status"],
                        "Filter": {"Prefix": r.get("Prefix", "")},
                        "Expiration": {"Days": int(r["ExpirationInDays"])},
                    }
                    for r in rules
                ]
            },
        )
    notifications = properties.get("NotificationConfiguration") or {}
    if (notifications.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled"):
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
    resolver.physical[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"


def _table(resolver: StackResolver, logical_id: str) -> None:
    name = f"{resolver.stack}-{logical_id}"
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
        BillingMode=properties.get("BillingMode", "PROVISIONED"),
    )
    ttl = properties.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": bool(ttl["Enabled"]),
            },
        )
    resolver.physical[logical_id] = name


def _queue(resolver: StackResolver, logical_id: str) -> None:
    name = f"{resolver.stack}-{logical_id}"
    properties = resolver.resolve(resolver.resources[logical_id].get("Properties") or {}, "")
    attributes = {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in properties.items()
        if key in {"MessageRetentionPeriod", "SqsManagedSseEnabled", "VisibilityTimeout"}
    }
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    resolver.physical[logical_id] = url
    resolver.attributes[(logical_id, "QueueName")] = name
    resolver.attributes[(logical_id, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def _email_identity(resolver: StackResolver, logical_id: str) -> None:
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    boto3.client("sesv2", region_name=REGION).create_email_identity(
        EmailIdentity=properties["EmailIdentity"]
    )
    resolver.physical[logical_id] = properties["EmailIdentity"]


_CREATORS: dict[str, Callable[[StackResolver, str], None]] = {
    "AWS::S3::Bucket": _bucket,
    "AWS::DynamoDB::Table": _table,
    "AWS::SQS::Queue": _queue,
    "AWS::SES::EmailIdentity": _email_identity,
}


def _function(resolver: StackResolver, logical_id: str) -> Function:
    defaults = _resolved_globals(resolver)
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    variables = {
        **((defaults.get("Environment") or {}).get("Variables") or {}),
        **((properties.get("Environment") or {}).get("Variables") or {}),
    }
    name = f"{resolver.stack}-{logical_id}"
    memory = int(properties.get("MemorySize", defaults.get("MemorySize", 128)))
    environment = {
        key: _on_this_machine(resolver, str(value)) for key, value in variables.items()
    } | {
        # what the Lambda runtime itself sets
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        # tests never ask the system's resolver
        "MXGATE_DNS_SERVER": f"127.0.0.1:{quiet_dns().port}",
    }
    handler_module = str(properties.get("Handler", defaults.get("Handler", ""))).split(".")[0]
    return Function(
        logical_id=logical_id,
        name=name,
        handler_file=REPO / properties["CodeUri"] / f"{handler_module}.py",
        memory_mb=memory,
        timeout=int(properties.get("Timeout", defaults.get("Timeout", 3))),
        environment=environment,
    )


def _on_this_machine(resolver: StackResolver, value: str) -> str:
    """A path under /opt/ is in a layer: the layer's ContentUri in this repository."""
    if not value.startswith(LAYER_MOUNT):
        return value
    relative = value.removeprefix(LAYER_MOUNT)
    for resource in resolver.resources.values():
        if resource.get("Type") == "AWS::Serverless::LayerVersion":
            candidate = REPO / resource["Properties"]["ContentUri"] / relative
            if candidate.exists():
                return str(candidate)
    raise FileNotFoundError(f"no layer of the template holds {value}")


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def sent_messages() -> list[Any]:
    """What moto's SES backend sent, in order (SESv2 raw sends included)."""
    from moto.ses.models import ses_backends  # noqa: PLC0415

    return list(ses_backends[ACCOUNT][REGION].sent_messages)
