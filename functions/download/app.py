"""Lambda entrypoint of the download links (a Function URL): a link mxgate signed, still
within its time, is answered with a redirect to a fresh presigned URL of the stored object; any
other is refused (403), an expired one says when it stopped working (410)."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import downloads
from mxgate.adapters.aws.links import DOWNLOAD_SECONDS, LinkRefusedError

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    links, store, bucket, clock = downloads()
    try:
        found, key = links.opened(event.get("queryStringParameters") or {}, clock.now(), bucket)
    except LinkRefusedError as refused:
        metrics.add_metric(
            name=f"DownloadsRefused_{refused.status}", unit=MetricUnit.Count, value=1
        )
        return {
            "statusCode": refused.status,
            "headers": {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
            "body": f"{refused.reason}\n",
        }
    metrics.add_metric(name="Downloads", unit=MetricUnit.Count, value=1)
    return {
        "statusCode": 302,
        "headers": {
            "Location": store.presigned(found, key, DOWNLOAD_SECONDS),
            "Cache-Control": "no-store",
        },
        "body": "",
    }
