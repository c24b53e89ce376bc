"""An SSH target's inputs, declared once per role and reused by every resource's Args.

Each role's six inputs - `<role>_host` (or `host`), `_ssh_port`, `_ssh_user`,
`_ssh_private_key` (a secret), `_ssh_host_key` (pinned) and `_ssh_known_hosts` - are read
in one place too: provider.core.inputs.ssh_target (and checked by ssh_problems). The input
names are what users' state holds (docs/state-contract.md): they never change here.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi


class HostAccess(TypedDict, total=False):
    """The resource's own host (a compile master)."""

    host: pulumi.Input[str]
    ssh_port: pulumi.Input[int]
    ssh_user: pulumi.Input[str]
    ssh_private_key: pulumi.Input[str]
    ssh_host_key: pulumi.Input[str]
    ssh_known_hosts: pulumi.Input[str]


class PrimaryAccess(TypedDict, total=False):
    """PE's primary (the CA, and where code comes from)."""

    primary_host: pulumi.Input[str]
    primary_ssh_port: pulumi.Input[int]
    primary_ssh_user: pulumi.Input[str]
    primary_ssh_private_key: pulumi.Input[str]
    primary_ssh_host_key: pulumi.Input[str]
    primary_ssh_known_hosts: pulumi.Input[str]


class DatabaseAccess(TypedDict, total=False):
    """PE-PostgreSQL's host, PE 2019.7+ (compilers' PuppetDB; provider/pe/database_access.py)."""

    database_host: pulumi.Input[str]
    database_ssh_port: pulumi.Input[int]
    database_ssh_user: pulumi.Input[str]
    database_ssh_private_key: pulumi.Input[str]
    database_ssh_host_key: pulumi.Input[str]
    database_ssh_known_hosts: pulumi.Input[str]


class PuppetdbAccess(TypedDict, total=False):
    puppetdb_host: pulumi.Input[str]
    puppetdb_ssh_port: pulumi.Input[int]
    puppetdb_ssh_user: pulumi.Input[str]
    puppetdb_ssh_private_key: pulumi.Input[str]
    puppetdb_ssh_host_key: pulumi.Input[str]
    puppetdb_ssh_known_hosts: pulumi.Input[str]


class ConsoleAccess(TypedDict, total=False):
    console_host: pulumi.Input[str]
    console_ssh_port: pulumi.Input[int]
    console_ssh_user: pulumi.Input[str]
    console_ssh_private_key: pulumi.Input[str]
    console_ssh_host_key: pulumi.Input[str]
    console_ssh_known_hosts: pulumi.Input[str]


class LbAccess(TypedDict, total=False):
    """The load balancer's host (HAProxy)."""

    lb_host: pulumi.Input[str]
    lb_ssh_port: pulumi.Input[int]
    lb_ssh_user: pulumi.Input[str]
    lb_ssh_private_key: pulumi.Input[str]
    lb_ssh_host_key: pulumi.Input[str]
    lb_ssh_known_hosts: pulumi.Input[str]
