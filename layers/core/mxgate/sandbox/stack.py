"""template.yaml's stack in moto, in process: the resources created from their definitions in
the template, each function's environment resolved from it, the handlers invoked as Lambda
would invoke them, and the state machine deployed with moto's Lambda invokes routed to the real
handlers. The sandbox, the tests and bench/cost.py all use it, so none keeps its own copy of a
resource name.

Physical names are what the local resolver gives (`mxgate-rawmailbucket` for the bucket, as the
local runtime names it) or `<stack>-<logical id>`; the canonical events in events/ use them.
Call everything inside an active `moto.mock_aws(config=MOTO_CONFIG)`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import secrets
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import boto3

from mxgate.adapters.aws import bootstrap
from mxgate.adapters.aws.settings import settings
from mxgate.local.lambdas import LambdaContext
from mxgate.mailmanager.template import Resolver, read_samconfig_parameters, read_template

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
LAYER_MOUNT = "/opt/"  # where Lambda mounts a layer's content
# What `make sam-build` writes into a layer, and the file in the repository it is written from.
BUILT_FROM = {"routes.json": "routes.yaml"}

# What `mock_aws` needs to run the state machine with the real handlers (TOOLING.md).
MOTO_CONFIG: Any = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}


def stack_name(samconfig: Path) -> str:
    import tomllib  # noqa: PLC0415

    config = tomllib.loads(samconfig.read_text())
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

    def __init__(
        self, template: Path, resolver: StackResolver, functions: dict[str, Function]
    ) -> None:
        self.template = template
        self.resolver = resolver
        self.functions = functions
        self._lock = threading.RLock()  # one invocation at a time, as one container would
        self._routes = contextlib.ExitStack()  # undoes the routing of moto's Lambda invoke
        # where the handlers' stdout goes (their logs and metrics), as CloudWatch Logs takes a
        # function's output; None: this process's stdout
        self.function_output: TextIO | None = None

    # ----------------------------------------------------------------------- building

    @classmethod
    def create(
        cls,
        template: Path,
        samconfig: Path,
        *,
        parameters: Mapping[str, str] | None = None,
        attributes: Mapping[tuple[str, str], str] | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Stack:
        """Create the buckets, tables, queues, secrets and SES identities as the template
        defines them. `parameters` win over samconfig.toml; `attributes` give `GetAtt` values
        of resources moto does not have (an ingress point's ARecord); `environment` is added
        to every function's (for example MXGATE_DNS_SERVER)."""
        document = read_template(template)
        resolver = StackResolver(
            document,
            {**read_samconfig_parameters(samconfig), **(parameters or {})},
            REGION,
            ACCOUNT,
            stack_name(samconfig),
        )
        resolver.attributes.update(attributes or {})
        for logical_id, kind in _types(document).items():
            creator = _CREATORS.get(kind)
            if creator is not None and resolver.resource_enabled(logical_id):
                creator(resolver, logical_id)
            properties = document["Resources"][logical_id].get("Properties") or {}
            if kind == "AWS::Serverless::Function" and "FunctionUrlConfig" in properties:
                # SAM's <function>Url resource; moto serves no function URLs
                url = f"https://{logical_id.lower()}.lambda-url.{REGION}.on.aws/"
                resolver.attributes.setdefault((f"{logical_id}Url", "FunctionUrl"), url)
        functions = {
            logical_id: _function(resolver, template.parent, logical_id, environment or {})
            for logical_id, kind in _types(document).items()
            if kind == "AWS::Serverless::Function"
        }
        settings.cache_clear()
        bootstrap.services.cache_clear()
        bootstrap.arrival_join.cache_clear()
        return cls(template, resolver, functions)

    def resource(self, logical_id: str) -> str:
        """The physical name (or URL, for a queue) of a resource."""
        return self.resolver.physical[logical_id]

    def properties(self, logical_id: str) -> dict[str, Any]:
        resource = self.resolver.resources[logical_id]
        resolved = self.resolver.resolve(resource.get("Properties") or {}, logical_id)
        return dict(resolved)

    def parameter(self, name: str) -> str:
        return str(self.resolver.values[name])

    def secret(self, logical_id: str) -> dict[str, str]:
        """The JSON value of one of the template's secrets, as moto keeps it."""
        value = boto3.client("secretsmanager", region_name=REGION).get_secret_value(
            SecretId=self.resource(logical_id)
        )
        return dict(json.loads(value["SecretString"]))

    # ----------------------------------------------------------------------- invoking

    def function_by_code(self, step: str) -> Function:
        """The function whose CodeUri is functions/<step>/."""
        for function in self.functions.values():
            if function.handler_file.parent.name == step:
                return function
        raise KeyError(step)

    def invoke(self, step: str, event: Any) -> Any:
        """Invoke the handler of functions/<step>/ with its own environment, as Lambda does."""
        return self.invoke_function(self.function_by_code(step), event)

    def invoke_function(self, function: Function, event: Any) -> Any:
        output = self.function_output
        redirected = contextlib.redirect_stdout(output) if output else contextlib.nullcontext()
        with self._lock, function_environment(function.environment), redirected:
            settings.cache_clear()  # each function reads its own environment
            module = self._load(function)
            context = LambdaContext(
                function.name,
                f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function.name}",
                memory_limit_in_mb=function.memory_mb,
            )
            started = time.perf_counter()
            try:
                return module.handler(json.loads(json.dumps(event)), context)
            finally:
                function.durations.append(time.perf_counter() - started)

    def event_targets(self, event: Mapping[str, Any]) -> list[Function]:
        """The functions one of whose EventBridge rules (SAM `EventBridgeRule` events) matches
        the event, as EventBridge would route it."""
        from moto.events.models import EventPattern  # noqa: PLC0415

        found = []
        for logical_id, function in self.functions.items():
            events = self.properties(logical_id).get("Events") or {}
            for source in events.values():
                if source.get("Type") != "EventBridgeRule":
                    continue
                pattern = source.get("Properties", {}).get("Pattern") or {}
                matcher = EventPattern(json.dumps(pattern), pattern)
                if matcher.matches_event(dict(event)):  # type: ignore[arg-type]
                    found.append(function)
                    break
        return found

    def deliver_event(self, function: Function, event: Any) -> None:
        """An asynchronous invocation (Lambda's EVENT, an EventBridge target): tried as many
        times as the function's EventInvokeConfig allows (Lambda's default: 3 in all); an
        event still refused goes to its OnFailure queue, if it has one, as Lambda sends it."""
        config = self.properties(function.logical_id).get("EventInvokeConfig") or {}
        attempts = 1 + int(config.get("MaximumRetryAttempts", 2))
        for attempt in range(1, attempts + 1):
            try:
                self.invoke_function(function, event)
                return
            except Exception as error:
                if attempt < attempts:
                    continue
                destination = (config.get("DestinationConfig") or {}).get("OnFailure") or {}
                queue = self._queue_of(str(destination.get("Destination", "")))
                if queue is None:
                    raise
                record = {
                    "requestContext": {
                        "functionArn": function.name,
                        "condition": "RetriesExhausted",
                        "approximateInvokeCount": attempts,
                    },
                    "requestPayload": event,
                    "responsePayload": {
                        "errorType": type(error).__name__,
                        "errorMessage": str(error),
                    },
                }
                boto3.client("sqs", region_name=REGION).send_message(
                    QueueUrl=queue, MessageBody=json.dumps(record)
                )

    def consume(self, queue: str) -> int:
        """Hand the queue's visible messages to the function whose SQS event source it is (ten
        at a time, as Lambda's event source mapping does), and delete those it took (all but
        its `batchItemFailures`). Returns how many were handed over. Delayed messages stay."""
        arn = self.resolver.attributes[(queue, "Arn")]
        function = next(
            f
            for logical_id, f in self.functions.items()
            for source in (self.properties(logical_id).get("Events") or {}).values()
            if source.get("Type") == "SQS" and source.get("Properties", {}).get("Queue") == arn
        )
        sqs = boto3.client("sqs", region_name=REGION)
        url, handed = self.resource(queue), 0
        while True:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return handed
            records = [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {},
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
            answer = self.invoke_function(function, {"Records": records}) or {}
            failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            handed += len(messages)
            if failed:  # left for their visibility timeout, as Lambda leaves them
                return handed

    def _queue_of(self, arn: str) -> str | None:
        for (logical_id, attribute), value in self.resolver.attributes.items():
            if attribute == "Arn" and value == arn and logical_id in self.resolver.physical:
                return self.resolver.physical[logical_id]
        return None

    def _load(self, function: Function) -> ModuleType:
        """Import app.py once per function; its composition root is cached per function, as
        each function's container would cache it (the real composition root builds it)."""
        if function.module is None:
            spec = importlib.util.spec_from_file_location(
                f"mxgate_function_{function.handler_file.parent.name}", function.handler_file
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for name in ("services", "arrival_join"):
                if hasattr(module, name):
                    setattr(module, name, functools.cache(getattr(bootstrap, name).__wrapped__))
            function.module = module
        return function.module

    # ----------------------------------------------------------------------- the workflow

    def deploy_state_machine(self, invoke: Callable[[str, Any], Any] | None = None) -> str:
        """Create the functions in moto's Lambda and the state machine from its DefinitionUri,
        with moto's Lambda invoke routed to the real handlers; returns the machine's ARN (and
        sets it as the state machine's `Ref` in the functions' environments)."""
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
        definition = (self.template.parent / properties["DefinitionUri"]).read_text()
        substitutions = self.resolver.resolve(
            properties.get("DefinitionSubstitutions") or {}, machine_id
        )
        for variable, value in substitutions.items():
            definition = definition.replace(f"${{{variable}}}", str(value))
        arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name=f"{self.resolver.stack}-{machine_id}",
            definition=definition,
            roleArn=role,
            type=properties.get("Type", "STANDARD"),
        )["stateMachineArn"]
        self.resolver.physical[machine_id] = arn
        for logical_id, function in self.functions.items():  # Ref to the machine, resolved now
            variables = _variables(self.resolver, logical_id)
            for key, value in variables.items():
                if value == {"Ref": machine_id}:
                    function.environment[key] = arn
        return arn

    def close_clients(self) -> None:
        """Say QUIT on the SMTP connections the functions' transports keep open (as a container
        that is shut down would drop them)."""
        for function in self.functions.values():
            services = getattr(function.module, "services", None)
            if services is None or not services.cache_info().currsize:
                continue
            for transport in services().transports.values():
                close = getattr(transport, "close", None)
                if close is not None:
                    close()

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

    def route(  # noqa: PLR0917 -- moto's own signature
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

    # moto's interpreter makes a Lambda client for every Task; making one iterates os.environ,
    # which a function running on another Map thread is changing (a KeyError named
    # "Exception", dead-lettering a delivery). One client, made here before any function runs.
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (  # noqa: PLC0415
        lambda_eval_utils,
    )

    made_for = lambda_eval_utils.boto_client_for  # type: ignore[attr-defined]
    made = made_for(region=REGION, service="lambda")

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        if (region, service) == (REGION, "lambda"):
            return made
        return made_for(region=region, service=service, state_credentials=state_credentials)

    original = LambdaSimpleBackend.invoke
    LambdaSimpleBackend.invoke = route  # type: ignore[method-assign,assignment]
    lambda_eval_utils.boto_client_for = client_for  # type: ignore[attr-defined]
    try:
        yield
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]
        lambda_eval_utils.boto_client_for = made_for  # type: ignore[attr-defined]


def run_execution(machine_arn: str, execution_input: Any, name: str, timeout: float = 60) -> Any:
    """Start one execution (always named: moto needs it) and wait for its end."""
    client = boto3.client("stepfunctions", region_name=REGION)
    arn = client.start_execution(
        stateMachineArn=machine_arn, name=name, input=json.dumps(execution_input)
    )["executionArn"]
    return wait_for_execution(arn, timeout)


def wait_for_execution(execution_arn: str, timeout: float = 60) -> Any:
    client = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_arn} still running after {timeout}s")
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


def _secret(resolver: StackResolver, logical_id: str) -> None:
    """A secret with its GenerateSecretString made here, as CloudFormation would make it."""
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    generate = properties.get("GenerateSecretString") or {}
    value = properties.get("SecretString") or generate.get("SecretStringTemplate") or "{}"
    document = json.loads(value)
    if "GenerateStringKey" in generate:
        document[generate["GenerateStringKey"]] = secrets.token_hex(16)
    arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"{resolver.stack}-{logical_id}", SecretString=json.dumps(document)
    )["ARN"]
    resolver.physical[logical_id] = arn


def _configuration_set(resolver: StackResolver, logical_id: str) -> None:
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    name = properties.get("Name") or f"{resolver.stack}-{logical_id}"
    boto3.client("sesv2", region_name=REGION).create_configuration_set(ConfigurationSetName=name)
    resolver.physical[logical_id] = name


_CREATORS: dict[str, Callable[[StackResolver, str], None]] = {
    "AWS::SES::ConfigurationSet": _configuration_set,
    "AWS::S3::Bucket": _bucket,
    "AWS::DynamoDB::Table": _table,
    "AWS::SQS::Queue": _queue,
    "AWS::SES::EmailIdentity": _email_identity,
    "AWS::SecretsManager::Secret": _secret,
}


def _variables(resolver: StackResolver, logical_id: str) -> dict[str, Any]:
    """A function's environment as the template writes it (globals, then its own)."""
    defaults = (resolver.template.get("Globals") or {}).get("Function") or {}
    own = resolver.resources[logical_id].get("Properties") or {}
    return {
        **((defaults.get("Environment") or {}).get("Variables") or {}),
        **((own.get("Environment") or {}).get("Variables") or {}),
    }


def _function(
    resolver: StackResolver, root: Path, logical_id: str, extra: Mapping[str, str]
) -> Function:
    defaults = _resolved_globals(resolver)
    properties = resolver.resolve(resolver.resources[logical_id]["Properties"], logical_id)
    variables = {
        **((defaults.get("Environment") or {}).get("Variables") or {}),
        **((properties.get("Environment") or {}).get("Variables") or {}),
    }
    name = f"{resolver.stack}-{logical_id}"
    memory = int(properties.get("MemorySize", defaults.get("MemorySize", 128)))
    environment = {
        key: _on_this_machine(resolver, root, str(value)) for key, value in variables.items()
    } | {
        # what the Lambda runtime itself sets
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        **extra,
    }
    handler_module = str(properties.get("Handler", defaults.get("Handler", ""))).split(".")[0]
    return Function(
        logical_id=logical_id,
        name=name,
        handler_file=root / properties["CodeUri"] / f"{handler_module}.py",
        memory_mb=memory,
        timeout=int(properties.get("Timeout", defaults.get("Timeout", 3))),
        environment=environment,
    )


def _on_this_machine(resolver: StackResolver, root: Path, value: str) -> str:
    """A path under /opt/ is in a layer: the layer's ContentUri in this repository (for a file
    the build writes, the one it is written from)."""
    if not value.startswith(LAYER_MOUNT):
        return value
    relative = value.removeprefix(LAYER_MOUNT)
    relative = BUILT_FROM.get(relative, relative)
    for resource in resolver.resources.values():
        if resource.get("Type") == "AWS::Serverless::LayerVersion":
            candidate = root / resource["Properties"]["ContentUri"] / relative
            if candidate.exists():
                return str(candidate)
    raise FileNotFoundError(f"no layer of the template holds {value}")


@contextlib.contextmanager
def function_environment(values: Mapping[str, str]) -> Iterator[None]:
    """The process environment with `values` set, as one function's container has it."""
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
