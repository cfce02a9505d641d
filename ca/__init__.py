"""pkiq's CA domain: keys, policies, profiles, issuance, revocation, CRLs, OpenSSL import/export.

Nothing in this package reads the environment, imports a transport (Celery, HTTP, click) or
looks at the wall clock: sessions, keys, settings and ``now`` come in as arguments.
"""
