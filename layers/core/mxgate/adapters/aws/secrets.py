"""Secrets Manager: the stack's secrets, read once per container (each is one request)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mxgate.adapters.aws.failures import transient_failures
from mxgate.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def secret_field(client: SecretsManagerClient, secret_id: str, field: str) -> str:
    """One field of a JSON secret (as GenerateSecretString writes them)."""
    with transient_failures(f"Secrets Manager {secret_id}"):
        value = client.get_secret_value(SecretId=secret_id)
    try:
        found = json.loads(value.get("SecretString", ""))[field]
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"secret {secret_id} has no field {field!r}") from error
    return str(found)
