"""The Pulumi program: one stack per PE environment (`Pulumi.<stack>.yaml`).

It will read the stack's configuration and build the deployment (primary, console,
PuppetDB, load balancer, file-sync method, compile masters). Until the components exist
it refuses to run rather than pretend to deploy anything.
"""

import pulumi

raise pulumi.RunError(
    "pe-compile-masters: the program is not built yet (the PeCompileMaster, PoolMember, FileSync and "
    "components issues come first); nothing was changed. See README.md."
)
