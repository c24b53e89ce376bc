"""The primary's file sync configuration: which compile masters its storage serves.

From PE 2015.3 the primary's file sync storage service answers only the certnames in
`file-sync.client-certnames` (and auth.conf's file sync rules built from the same list),
which the primary's own Puppet run rebuilds from the nodes PuppetDB knows as masters -
why PE's add procedure ends with a run on the primary (docs/resources/infra-refresh.md).
The file is HOCON (PE writes it with its hocon settings type), read with pyhocon.
"""

from __future__ import annotations

from pyhocon import ConfigFactory  # type: ignore[import-untyped]
from pyhocon.exceptions import ConfigException  # type: ignore[import-untyped]
from pyparsing import ParseBaseException

from provider.core.errors import ProviderError

SETTING = "file-sync.client-certnames"


def client_certnames(text: str, path: str) -> list[str] | None:
    """The certnames the storage serves; None when the file sets none (no file, or file
    sync not configured there). Raises when the file is not HOCON or the setting not a list."""
    if not text.strip():
        return None
    try:
        conf = ConfigFactory.parse_string(text, resolve=False)
        value = conf.get(SETTING, None)
    except (ConfigException, ParseBaseException) as exc:
        raise ProviderError(f"{path} is not readable HOCON ({exc}): check the primary's file sync settings") from None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProviderError(f"{path}: {SETTING} is not a list of certnames ({value!r})")
    return [str(v) for v in value]
