"""Dynamic providers: one resource kind per module at this level, built from the
subpackages below, each named for what it talks to:

- core/      talks to nothing: errors at the engine's boundary, input checks, progress lines
- pe/        PE's interfaces (CA, classifier, agent runs, services, PE-PostgreSQL) by generation
- master/    the compile master procedure: its inputs, its steps, its removal
- lb/        the load balancer (HAProxy) and its pool drivers
- codesync/  code sync planning (rsync, r10k, NFS)
- ssh/       the SSH transport: pinned trust (no paramiko) and sessions

The provider server (`python -m pulumi.dynamic`) unpickles each resource's provider by
reference to its class - `provider.compile_master.PeCompileMasterProvider` and the five
others - so the resource modules' paths are part of every stack's state: never move or
rename one without a state migration. Importing a module must not create resources.
"""
