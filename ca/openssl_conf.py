"""A reader for OpenSSL's config format (openssl.cnf), enough for ``[ ca ]`` sections.

Sections, ``name = value``, ``#`` comments, quoted values, ``\\`` line continuations, and
``$var`` / ``${var}`` / ``$section::var`` expansion with fallback to the default section,
as NCONF does. ``.include`` and ``.pragma`` lines are ignored (reported to the caller).

A config may come with a folder from anyone, so reading it is bounded: no value may grow
to 64 KiB once expanded (NCONF's own MAX_CONF_VALUE_LENGTH, "variable expansion too
long"), all values together past ``MAX_EXPANDED_TOTAL``, and errors name the line, never
what it holds.
"""

from __future__ import annotations

import re

from .confined import shown
from .errors import BadInput

MAX_VALUE = 65536  # OpenSSL crypto/conf/conf_def.c MAX_CONF_VALUE_LENGTH, NUL included
MAX_EXPANDED_TOTAL = 4 * 2**20  # many values each under MAX_VALUE must not add up to GBs
_VAR = re.compile(
    r"\$(?:\{([A-Za-z0-9_.]+(?:::[A-Za-z0-9_.]+)?)\}|([A-Za-z0-9_]+(?:::[A-Za-z0-9_]+)?))")


class OpenSSLConfig:
    def __init__(self, text: str, overrides: dict[str, str] | None = None,
                 what: str = "openssl config"):
        """``overrides`` win over the text's own values (``dir``: the folder being read) and
        are defined from the start, so ``$dir`` works in a config that never sets it."""
        overrides = overrides or {}
        self.sections: dict[str, dict[str, str]] = {"default": dict(overrides)}
        self.ignored: list[str] = []
        self.what = what
        self._total = 0
        self._parse(text, overrides)

    def _parse(self, text: str, overrides: dict[str, str]) -> None:
        section = "default"
        for lineno, line in _logical_lines(text):
            line = _strip_comment(line).strip()
            if not line:
                continue
            if line.startswith("."):
                self.ignored.append(line)
                continue
            where = f"{self.what} line {lineno}"
            if line.startswith("["):
                if not line.endswith("]"):
                    raise BadInput(f"{where}: a section header without its closing ']'")
                section = line[1:-1].strip()
                self.sections.setdefault(section, {})
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise BadInput(f"{where}: expected name = value")
            name = name.strip()
            value = _unquote(value.strip())
            value = overrides[name] if name in overrides else self._expand(value, section, where,
                                                                           name)
            self._total += len(value)
            if self._total > MAX_EXPANDED_TOTAL:
                raise BadInput(f"{where}: the values grow past {MAX_EXPANDED_TOTAL:,} "
                               "characters in all once $variables are expanded")
            self.sections[section][name] = value

    def _expand(self, value: str, section: str, where: str, name: str) -> str:
        """``value`` with its variables replaced, refused as soon as it reaches MAX_VALUE
        characters, before it is built: a chain of doublings would not fit in memory."""
        pieces, size, at = [], 0, 0
        for match in _VAR.finditer(value):
            ref = match.group(1) or match.group(2)
            sec, _, var = ref.rpartition("::")
            found = self.get(sec or section, var)
            if found is None:
                raise BadInput(f"{where}: variable {shown('$' + ref)} has no value")
            pieces += [value[at:match.start()], found]
            size += match.start() - at + len(found)
            at = match.end()
            if size >= MAX_VALUE:
                break
        pieces.append(value[at:])
        size += len(value) - at
        if size >= MAX_VALUE:
            raise BadInput(f"{where}: {shown(name)} reaches {MAX_VALUE} characters once "
                           "$variables are expanded (OpenSSL's limit: variable expansion too "
                           "long)")
        return "".join(pieces)

    def get(self, section: str, name: str, default: str | None = None) -> str | None:
        for sec in (section, "default"):
            if name in self.sections.get(sec, {}):
                return self.sections[sec][name]
        return default

    def section(self, name: str) -> dict[str, str]:
        if name not in self.sections:
            raise BadInput(f"{self.what}: there is no [ {shown(name, 40)} ] section")
        return self.sections[name]


def _logical_lines(text: str):
    """(first line number, text) with backslash continuations joined, in linear time."""
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        start, parts = i + 1, [lines[i]]
        i += 1
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            parts.append(lines[i])
            i += 1
        yield start, "".join(parts)


def _strip_comment(line: str) -> str:
    quote = None
    for idx, char in enumerate(line):
        if char in "\"'" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (idx == 0 or line[idx - 1] != "\\"):
            return line[:idx]
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def yes(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("y", "yes", "true", "on", "1")
