"""The real Pulumi CLI, run with this project's program served in-process.

The CLI runs a Python program through the language host `pulumi-language-python`, which
the Go module proxy here does not serve (README, "The Pulumi CLI"). The SDK's automation
API has the answer for that case, an *inline program*: it serves the language runtime
(`pulumi.automation._server.LanguageServer`) in its own process and starts the CLI with
`--client=127.0.0.1:PORT --exec-kind auto.inline`, so the CLI never looks for a language
plugin (pulumi/pulumi sdk/python/lib/pulumi/automation/_stack.py; CLI
pkg/engine/plugin_host.go). `python -m pulumicli ARGS` does exactly that around any CLI
command line, so every flag of the real CLI (`--diff`, `--json`, `--expect-no-changes`,
`--event-log`, ...) works as documented and the output is the CLI's own.
"""
