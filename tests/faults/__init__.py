"""Issue 7: faults injected into the lab, bad input, secrets and trust."""
