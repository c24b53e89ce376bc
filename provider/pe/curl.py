"""curl on PE's hosts, with only what the oldest supported master platform's curl has.

PE's master platforms ship old curl (RHEL 7: 7.29.0, Ubuntu 18.04: 7.58.0; the lab's
reference-platform gate, lab/platforms.py, refuses newer options). curl's fail-with-body
option (7.76.0) would keep an HTTP error's body, which is the CA's or PuppetDB's reason; without
it, `-f` (curl 4.0) drops the body. So the calls here print the HTTP status after the body
with `-w '\\n%{http_code}'` (`-w` 6.5, `%{http_code}` 7.x: both in every curl PE ran on) and
`with_http_status` turns a 4xx/5xx into the failure `--fail` would have made (exit 22),
with the body kept for the error message.
"""

from __future__ import annotations

import dataclasses

from provider.core.command import CommandResult

# What `curl --fail` exits with on an HTTP error >= 400 (curl's CURLE_HTTP_RETURNED_ERROR).
HTTP_ERROR_EXIT = 22
STATUS_FORMAT = "\\n%{http_code}"


def curl_argv(*args: str, max_time: int = 60) -> list[str]:
    """curl that prints the body, then a line with the HTTP status (read by with_http_status)."""
    return ["curl", "-sS", "--max-time", str(max_time), "-w", STATUS_FORMAT, *args]


def split_status(stdout: str) -> tuple[str, int | None]:
    """(body, status) from curl_argv's output; status None when curl printed none (it
    failed before an HTTP answer: its exit status and stderr say why)."""
    body, sep, last = stdout.rpartition("\n")
    if not sep or not last.strip().isdigit():
        return stdout, None
    status = int(last.strip())
    return body, status or None  # 000: no HTTP answer


def with_http_status(result: CommandResult) -> CommandResult:
    """The result as curl's fail-with-body option would have left it: stdout is the body, and an
    HTTP status >= 400 (or none at all) is a failure with curl's own wording on stderr."""
    body, status = split_status(result.stdout)
    if result.exit_status != 0:
        return dataclasses.replace(result, stdout=body)
    if status is None:
        return dataclasses.replace(
            result, stdout=body, exit_status=HTTP_ERROR_EXIT, stderr=result.stderr + "curl: no HTTP status received"
        )
    if status >= 400:
        message = f"curl: ({HTTP_ERROR_EXIT}) The requested URL returned error: {status}"
        stderr = f"{result.stderr.rstrip()}\n{message}".strip()
        return dataclasses.replace(result, stdout=body, exit_status=HTTP_ERROR_EXIT, stderr=stderr)
    return dataclasses.replace(result, stdout=body)


def http_status(result: CommandResult) -> int | None:
    """The HTTP status curl_argv printed (None: no HTTP answer)."""
    return split_status(result.stdout)[1] if result.exit_status == 0 else None
