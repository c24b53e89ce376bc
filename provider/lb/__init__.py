"""The load balancer: HAProxy's config and runtime API (haproxy) and the pool drivers."""
