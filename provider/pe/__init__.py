"""PE's interfaces and its generation model: the CA, the classifier and RBAC, agent runs,
services, the primary's settings, PE-PostgreSQL access, CRL refreshes - by PE generation."""
