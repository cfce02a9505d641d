"""The nightly CRL updater: fetch CRLs from distribution points, validate them against the
trusted CA list, keep the last good one, raise alerts; driven by Celery beat."""
