"""The program's body, importable (tests run it under mocks): read the `pe:` stack
config, validate it, build the PeDeployment, export what an operator looks at."""

from __future__ import annotations

import pulumi

from components.compile_master import Credentials
from components.deployment import PeDeployment
from components.settings import NAMESPACE, OBJECT_KEYS, PLAIN_KEYS, SECRET_KEYS, ConfigError, parse


def read_config() -> tuple[dict[str, object], dict[str, pulumi.Output[str]]]:
    config = pulumi.Config(NAMESPACE)
    raw: dict[str, object] = {}
    for key in PLAIN_KEYS:
        try:
            value = config.get_object(key) if key in OBJECT_KEYS else config.get(key)
        except pulumi.ConfigTypeError:
            raise pulumi.RunError(f"stack configuration: {NAMESPACE}:{key}: is not valid YAML/JSON") from None
        if value is not None:
            raw[key] = value
    secrets = {key: value for key in SECRET_KEYS if (value := config.get_secret(key)) is not None}
    for key in configured_keys() - set(PLAIN_KEYS) - set(SECRET_KEYS):
        raw[key] = None  # parse() names it as unknown (a typo must not pass silently)
    return raw, secrets


def configured_keys() -> set[str]:
    """Every `pe:` key the stack sets, as the SDK received them (engine or mocks)."""
    from pulumi.runtime.config import CONFIG, get_config_env

    names = set(CONFIG.get()) | set(get_config_env())
    prefix = f"{NAMESPACE}:"
    return {n[len(prefix) :].removeprefix("config:") for n in names if n.startswith(prefix)}


def main() -> PeDeployment:
    raw, secrets = read_config()
    try:
        spec, files = parse(raw, set(secrets))
    except ConfigError as exc:
        raise pulumi.RunError(f"stack configuration: {exc}") from None

    def secret(key: str, from_file: str | None) -> pulumi.Input[str] | None:
        if key in secrets:
            return secrets[key]
        return pulumi.Output.secret(from_file) if from_file is not None else None

    ssh_key = secret("sshPrivateKey", files.ssh_private_key)
    assert ssh_key is not None  # parse() refused a config without one
    creds = Credentials(
        ssh_private_key=ssh_key,
        rbac_token=secret("rbacToken", files.rbac_token),
        classifier_client_key=secret("classifierClientKey", files.classifier_client_key),
    )
    deployment = PeDeployment(pulumi.get_stack(), spec, creds)
    pulumi.export("pool_members", deployment.members)
    pulumi.export("cert_fingerprints", deployment.fingerprints)
    pulumi.export("infra_refresh", deployment.refresh.status)
    return deployment
