"""Lambda entrypoint of the RecipientsSync custom resource: on each deploy, the directory's
address list gets the routes file's addresses (as `mxgate address-list sync --aws` does)."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import sync_directory_list
from mxgate.adapters.aws.custom_resource import run_custom_resource

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()


def fill(properties: Mapping[str, Any]) -> dict[str, Any]:
    result = sync_directory_list(str(properties["AddressListId"]))
    logger.info(
        "address list synced",
        extra={"list": result.list_id, "added": len(result.added), "removed": len(result.removed)},
    )
    return {"Members": result.members}


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> None:
    list_id = str((event.get("ResourceProperties") or {}).get("AddressListId", "none"))
    run_custom_resource(event, event.get("PhysicalResourceId") or list_id, fill)
