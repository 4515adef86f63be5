"""Reading declarative TOML files (policies, verification templates) with errors that help.

Both loaders parse with :func:`read_toml` and walk the document with a :class:`TomlReader`: every
check that fails is a :class:`~policies.errors.PolicyError` naming the file, the dotted key and
the rule, so a data owner can fix a file without reading code. The checks here are the ones both
documents share; each loader adds its own on a subclass.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from policies.errors import PolicyError


def read_toml(text: str, source: str) -> dict[str, Any]:
    """A TOML document, or a ``toml_syntax`` :class:`PolicyError` naming ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, "(document)", "toml_syntax", str(exc)) from None


class TomlReader:
    """Typed reads of one document's keys; ``source`` names the file in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, rule: str, message: str) -> PolicyError:
        return PolicyError(self.source, key, rule, message)

    @staticmethod
    def where(prefix: str, key: str) -> str:
        """The dotted key of ``key`` inside the table at ``prefix`` (``""``: the top level)."""
        return f"{prefix}.{key}" if prefix else key

    def no_unknown(self, node: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in node:
            if key not in allowed:
                raise self.fail(
                    self.where(prefix, key),
                    "unknown_key",
                    f"allowed keys: {', '.join(sorted(allowed))}",
                )

    def string(self, node: Mapping[str, Any], key: str, prefix: str, *, required: bool) -> str:
        """A string value; ``""`` when an optional key is absent."""
        where = self.where(prefix, key)
        if key not in node:
            if required:
                raise self.fail(where, "required", "this key is required")
            return ""
        value = node[key]
        if not isinstance(value, str):
            raise self.fail(where, "type", "must be a string")
        return value

    def integer(
        self,
        node: Mapping[str, Any],
        key: str,
        prefix: str,
        *,
        minimum: int,
        maximum: int | None = None,
        default: int | None = None,
    ) -> int:
        """An integer (not a boolean) within ``minimum..maximum``; required unless it has a
        ``default``."""
        where = self.where(prefix, key)
        if key not in node:
            if default is None:
                raise self.fail(where, "required", "this key is required")
            return default
        value = node[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, "type", "must be an integer")
        if maximum is None:
            if value < minimum:
                raise self.fail(where, "range", f"must be at least {minimum}")
        elif not minimum <= value <= maximum:
            raise self.fail(where, "range", f"must be between {minimum} and {maximum}")
        return value
