"""Lambda entrypoint of the configuration set's events (EventBridge, source aws.ses): what the
mailbox provider did with each delivery SES sent, on its recipients' timeline."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.adapters.aws.ses_events import provider_event
from mxgate.workflow.provider import record_provider_event

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="ProviderReports", unit=MetricUnit.Count, value=1)  # ours or not
    reported = provider_event(event)
    if reported is None:  # SES mail that is not a delivery of ours (a DSN, another sender)
        return {"recorded": 0}
    logger.append_keys(message_id=reported.message_id, route=reported.route, kind=reported.kind)
    metrics.add_metric(name=f"Provider_{reported.kind}", unit=MetricUnit.Count, value=1)
    results = record_provider_event(reported, services())
    return {"recorded": len(results), "results": [r.model_dump(mode="json") for r in results]}
