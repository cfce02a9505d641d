"""Typed errors raised by the CA domain; front ends map ``exit_code`` / ``http_status``."""

from __future__ import annotations


class PkiqError(Exception):
    """Base of every error a PKI engineer is meant to read (no traceback needed)."""

    exit_code = 1
    http_status = 400


class BadInput(PkiqError):
    """A file or value that cannot be parsed as what it claims to be."""

    exit_code = 3


class BadSignature(BadInput):
    """A CSR or CRL whose signature does not verify."""


class PolicyViolation(PkiqError):
    """The request is well formed but the CA's policy or the Expressway rules refuse it."""

    exit_code = 4
    http_status = 422

    def __init__(self, message: str, field: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.field = field
        self.rule = rule


class NotFound(PkiqError):
    exit_code = 5
    http_status = 404


class WrongPassphrase(PkiqError):
    exit_code = 6
    http_status = 403


class WeakPassphrase(WrongPassphrase):
    """A passphrase being chosen that is too short: a passphrase problem, so exit 6."""


class Conflict(PkiqError):
    """The database already holds something that this request would duplicate."""

    exit_code = 7
    http_status = 409


class CaExpired(PolicyViolation):
    """The issuing CA is no longer valid, so nothing it signs could be."""


class ConfigError(PkiqError):
    """A ``PKIQ_*`` setting pkiq cannot use: a usage error, as a bad option is. A server
    misconfigured is not the client's fault, hence 500 for an API."""

    exit_code = 2
    http_status = 500
