"""Code sync between masters (rsync, r10k, NFS): planning, pure; the resource runs it."""
