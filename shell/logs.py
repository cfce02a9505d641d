"""Log lines as text or as JSON (``PKIQ_LOG_FORMAT``), with the job, CA, node or
distribution point they are about. Standard library only: the CLI loads this before it
knows whether it needs anything else.

Context comes two ways: ``with log_context(job_id=7, ca="Root"):`` around a piece of work
(a contextvar, so every line logged inside carries it, whichever module logs), or
``log.info(..., extra={"node": fqdn})`` on one line. Only the keys in ``CONTEXT_KEYS`` are
written: a stray ``extra=`` never puts a request body or a key into the log. Credentials in
URLs (``scheme://user:password@host``) are masked in every line either format writes."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import re

FORMATS = ("text", "json")
# What a line may say it is about, in this order.
CONTEXT_KEYS = ("job_id", "ca", "node", "distribution_point", "rollout_id", "task", "task_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EMPTY: dict = {}  # never changed: each binding makes a new dict
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("pkiq_log_context")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*):[^/@\s]*@")


@contextlib.contextmanager
def log_context(**fields):
    """Every line logged inside carries ``fields`` (None values are left out)."""
    token = _context.set({**_context.get(_EMPTY), **{k: v for k, v in fields.items()
                                               if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields) -> contextvars.Token:
    """``log_context`` for code that cannot wrap a ``with`` (signal handlers); undo with
    ``unbind(token)``."""
    return _context.set({**_context.get(_EMPTY), **{k: v for k, v in fields.items()
                                              if v is not None}})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


def mask(text: str) -> str:
    """``scheme://user:password@`` becomes ``scheme://user:***@``."""
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text) if "@" in text else text


def context_of(record: logging.LogRecord) -> dict:
    """The record's context: the contextvar's fields, then ``extra=`` ones, known keys only."""
    bound = _context.get(_EMPTY)
    found = {}
    for key in CONTEXT_KEYS:
        value = record.__dict__.get(key, bound.get(key))
        if value is not None:
            found[key] = value if isinstance(value, int | float | bool) else mask(str(value))
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds), level, logger,
    message, the context fields present, and ``exception`` (the traceback) when there is
    one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name,
                "message": mask(record.getMessage())}
        line.update(context_of(record))
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = mask(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, with the context as ``key=value`` after the message."""

    def __init__(self, fmt: str | None = TEXT_FORMAT, datefmt: str | None = None,
                 style="%", **kwargs):
        super().__init__(fmt, datefmt, style, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = context_of(record)
        if context:
            head, sep, tail = text.partition("\n")
            head += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
            text = head + sep + tail
        return mask(text)


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def check_format(value: str | None) -> str:
    value = (value or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"{value!r} is not a log format")
    return value


def configure(fmt: str = "text", level: int | str = logging.INFO, stream=None) -> None:
    """One handler on the root logger, in ``fmt``, at ``level``; what was there before
    (Celery's, an earlier call's) is replaced."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def dict_config(base: dict, fmt: str) -> dict:
    """A ``logging.config.dictConfig`` mapping (uvicorn's) with every formatter in ``fmt``
    and pkiq's loggers on its default handler."""
    import copy

    config = copy.deepcopy(base)
    for name in list(config.get("formatters", {})):
        if fmt == "json":
            config["formatters"][name] = {"()": "shell.logs.JsonFormatter"}
    config.setdefault("loggers", {})["pkiq"] = {"handlers": ["default"], "level": "INFO",
                                                "propagate": False}
    return config
