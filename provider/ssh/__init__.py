"""The SSH transport: pinned trust without paramiko (trust), sessions with it (session)."""
