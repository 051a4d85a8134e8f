"""Typed settings of the Lambda functions, read once from the environment the template sets."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AwsSettings(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True)

    raw_bucket: str
    raw_prefix: str = "raw/"  # the rule set's WriteToS3 S3Prefix
    state_table: str
    dead_letter_queue: str  # the queue URL
    routes_file: Path = Path("/opt/routes.json")  # the config layer: the checked JSON form
    # what the routes file's ${Parameter} placeholders take (MXGATE_ROUTES_PARAMETERS, JSON)
    routes_parameters: dict[str, str] = Field(default_factory=dict)
    event_bus: str = "default"
    gateway_host: str = "mxgate"
    dns_server: str | None = None  # "host:port"; unset: the Lambda's own resolver
    defer_queue: str | None = None  # the deferred queue's URL; unset: no deferral
    state_machine_arn: str | None = None  # what the Start and Redeliver functions start
    ses_configuration_set: str | None = None
    loop_secret: str | None = None  # the loop guard's key: a secret's ARN (Process only)
    # signed download links: the Download function's URL and the key's secret (Deliver)
    download_url: str | None = None
    link_secret: str | None = None
    # The arrival join (Start function): its later look at half-arrived messages, where it
    # reports those it finds unstarted, and whose Received fields it trusts for HELO and IP.
    arrival_check_queue: str | None = None
    unstarted_queue: str | None = None
    mail_manager_hosts: str = ".amazonaws.com"
    # The relay ingress point Deliver submits employee mail to (transport: mail_manager).
    relay_host: str | None = None
    relay_port: int = 587
    relay_user: str | None = None  # the ingress point id
    relay_secret: str | None = None  # ARN of the secret whose key `password` is the password
    relay_ca_file: Path | None = None  # certificates to trust for it (default: the system's)
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
            "loop_secret": env.get("MXGATE_LOOP_SECRET"),
            "download_url": env.get("MXGATE_DOWNLOAD_URL"),
            "link_secret": env.get("MXGATE_LINK_SECRET"),
            "arrival_check_queue": env.get("MXGATE_ARRIVAL_CHECK_QUEUE"),
            "unstarted_queue": env.get("MXGATE_UNSTARTED_QUEUE"),
            "mail_manager_hosts": env.get("MXGATE_MAIL_MANAGER_HOSTS"),
            "relay_host": env.get("MXGATE_RELAY_HOST"),
            "relay_port": env.get("MXGATE_RELAY_PORT"),
            "relay_user": env.get("MXGATE_RELAY_USER"),
            "relay_secret": env.get("MXGATE_RELAY_SECRET"),
            "relay_ca_file": env.get("MXGATE_RELAY_CA_FILE"),
            "quarantine_days": env.get("MXGATE_QUARANTINE_DAYS"),
            "arc_seal_key_secret": env.get("MXGATE_ARC_SEAL_KEY_SECRET"),
            "arc_seal_domain": env.get("MXGATE_ARC_SEAL_DOMAIN"),
            "arc_seal_selector": env.get("MXGATE_ARC_SEAL_SELECTOR"),
        }
        given: dict[str, object] = {k: v for k, v in values.items() if v}
        if env.get("MXGATE_ROUTES_PARAMETERS"):
            given["routes_parameters"] = json.loads(env["MXGATE_ROUTES_PARAMETERS"])
        return cls.model_validate(given)


@cache
def settings() -> AwsSettings:
    return AwsSettings.from_env()
