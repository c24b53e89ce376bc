"""Dynamic providers: one resource kind per module, built from pure pieces (command
builders, parsers, planning) and thin executors (SSH via paramiko, HTTPS via requests).

The provider server (`python -m pulumi.dynamic`) imports these modules by name from the
project root, so a module's path is part of the stack state: never move or rename one
without a state migration. Importing a module must not create resources.
"""
