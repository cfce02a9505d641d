"""A reader for OpenSSL's config format (openssl.cnf), enough for ``[ ca ]`` sections.

Sections, ``name = value``, ``#`` comments, quoted values, ``\\`` line continuations, and
``$var`` / ``${var}`` / ``$section::var`` expansion with fallback to the default section,
as NCONF does. ``.include`` and ``.pragma`` lines are ignored (reported to the caller).
"""

from __future__ import annotations

import re

from .errors import BadInput

_VAR = re.compile(
    r"\$(?:\{([A-Za-z0-9_.]+(?:::[A-Za-z0-9_.]+)?)\}|([A-Za-z0-9_]+(?:::[A-Za-z0-9_]+)?))")


class OpenSSLConfig:
    def __init__(self, text: str, overrides: dict[str, str] | None = None):
        self.sections: dict[str, dict[str, str]] = {"default": {}}
        self.ignored: list[str] = []
        self._parse(text, overrides or {})

    def _parse(self, text: str, overrides: dict[str, str]) -> None:
        section = "default"
        lines = text.replace("\r\n", "\n").split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + lines[i]
                i += 1
            line = _strip_comment(line).strip()
            if not line:
                continue
            if line.startswith("."):
                self.ignored.append(line)
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    raise BadInput(f"openssl config: unterminated section header {line!r}")
                section = line[1:-1].strip()
                self.sections.setdefault(section, {})
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise BadInput(f"openssl config: cannot read line {line!r} (expected name = value)")
            name = name.strip()
            value = _unquote(value.strip())
            value = overrides[name] if name in overrides else self._expand(value, section)
            self.sections[section][name] = value

    def _expand(self, value: str, section: str) -> str:
        def repl(match: re.Match) -> str:
            ref = match.group(1) or match.group(2)
            sec, _, var = ref.rpartition("::")
            found = self.get(sec or section, var)
            if found is None:
                raise BadInput(f"openssl config: variable ${ref} has no value")
            return found

        return _VAR.sub(repl, value)

    def get(self, section: str, name: str, default: str | None = None) -> str | None:
        for sec in (section, "default"):
            if name in self.sections.get(sec, {}):
                return self.sections[sec][name]
        return default

    def section(self, name: str) -> dict[str, str]:
        if name not in self.sections:
            raise BadInput(f"openssl config: there is no [ {name} ] section")
        return self.sections[name]


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
