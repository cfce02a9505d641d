"""pkiq's use cases, one plain function each, over a ``ServiceContext`` (settings, a session
factory, a clock and the ports to the outside: a job announcer). Every front end calls these
and only renders what they return: the CLI today, the HTTP API and the Expressway publishers
next. Results are plain dicts (what ``--json`` prints and an API would answer) or the domain's
own objects where a front end needs bytes (certificates, CRLs).

Imports point down only: ``ca`` (domain), ``shell`` (settings, database, files) and
``scheduler`` (the CRL pipeline); never ``worker`` or a front end."""

from .context import Announcer, ServiceContext, utc_now

__all__ = ["Announcer", "ServiceContext", "utc_now"]
