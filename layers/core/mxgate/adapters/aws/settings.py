"""Typed settings of the Lambda functions, read once from the environment the template sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class AwsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    raw_bucket: str
    raw_prefix: str = "raw/"  # the rule set's WriteToS3 S3Prefix
    state_table: str
    dead_letter_queue: str  # the queue URL
    routes_file: Path = Path("/opt/routes.yaml")  # the config layer
    event_bus: str = "default"
    gateway_host: str = "mxgate"
    dns_server: str | None = None  # "host:port"; unset: the Lambda's own resolver
    defer_queue: str | None = None  # the deferred queue's URL; unset: no deferral
    state_machine_arn: str | None = None  # what the Redeliver function starts
    ses_configuration_set: str | None = None
    # Whether Process looks for an envelope kept beside each message: only when the rule set
    # also sends Mail Manager's InvokeLambda event to the Process function, which keeps one.
    envelope_sidecars: bool = False
    quarantine_days: int = 30  # how long quarantine records are kept: RawMailRetentionDays
    # ARC sealing of mailbox deliveries: the Secrets Manager secret with the key; unset: none
    arc_seal_key_secret: str | None = None
    arc_seal_domain: str = ""
    arc_seal_selector: str = "arc"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ
        values = {
            "raw_bucket": env.get("MXGATE_RAW_BUCKET"),
            "raw_prefix": env.get("MXGATE_RAW_PREFIX"),
            "state_table": env.get("MXGATE_STATE_TABLE"),
            "dead_letter_queue": env.get("MXGATE_DEAD_LETTER_QUEUE"),
            "routes_file": env.get("MXGATE_ROUTES_FILE"),
            "event_bus": env.get("MXGATE_EVENT_BUS"),
            "gateway_host": env.get("MXGATE_GATEWAY_HOST"),
            "dns_server": env.get("MXGATE_DNS_SERVER"),
            "defer_queue": env.get("MXGATE_DEFER_QUEUE"),
            "state_machine_arn": env.get("MXGATE_STATE_MACHINE_ARN"),
            "ses_configuration_set": env.get("MXGATE_SES_CONFIGURATION_SET"),
            "envelope_sidecars": env.get("MXGATE_ENVELOPE_SIDECARS"),
            "quarantine_days": env.get("MXGATE_QUARANTINE_DAYS"),
            "arc_seal_key_secret": env.get("MXGATE_ARC_SEAL_KEY_SECRET"),
            "arc_seal_domain": env.get("MXGATE_ARC_SEAL_DOMAIN"),
            "arc_seal_selector": env.get("MXGATE_ARC_SEAL_SELECTOR"),
        }
        return cls.model_validate({k: v for k, v in values.items() if v})


@cache
def settings() -> AwsSettings:
    return AwsSettings.from_env()
