"""Template parameters in the routes file, so one file serves any deployment. Pure.

`sam deploy --guided` asks for the domains, the tenant, the routing domains and the
directory; the routes file names them instead of repeating them:

- `${Name}` inside a string is replaced by the template parameter `Name`
  (`orders@${AppDomain}`);
- a list item, or a mapping key, that is exactly `${Name}` of a comma-delimited parameter
  becomes one item, or one key (each with the same value), per element; an empty parameter
  gives none (`users: {"${M365Users}": m365}`).

The values come from where the template's own come from: the functions' environment on
AWS (the template passes its parameters), samconfig.toml and config/local.yaml on one
machine, `--params` for `mxgate routes check`. A name that is no parameter is a problem
reported with its place, like any other in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mxgate.config_files import Problem, suggestion

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _Substitution:
    def __init__(self, parameters: Mapping[str, str]) -> None:
        self.parameters = parameters
        self.problems: list[Problem] = []
        self.used: set[str] = set()

    def _value(self, name: str, place: str) -> str | None:
        if name not in self.parameters:
            known = ", ".join(sorted(self.parameters)) or "none"
            self.problems.append(
                Problem(
                    place,
                    f"${{{name}}} names no template parameter{suggestion(name, self.parameters)} "
                    f"(parameters: {known})",
                )
            )
            return None
        self.used.add(name)
        return self.parameters[name]

    def text(self, value: str, place: str) -> str:
        def replaced(match: re.Match[str]) -> str:
            found = self._value(match.group(1), place)
            return match.group(0) if found is None else found

        return _PLACEHOLDER.sub(replaced, value)

    def spread(self, value: object, place: str) -> list[str] | None:
        """The elements of a whole-value placeholder, or None if `value` is not one."""
        if not isinstance(value, str):
            return None
        match = _PLACEHOLDER.fullmatch(value.strip())
        if match is None:
            return None
        found = self._value(match.group(1), place)
        return [] if found is None else _items(found)

    def walk(self, value: Any, place: str) -> Any:
        if isinstance(value, str):
            return self.text(value, place)
        if isinstance(value, list):
            items: list[Any] = []
            for index, item in enumerate(value):
                spread = self.spread(item, f"{place}[{index}]")
                items += spread if spread is not None else [self.walk(item, f"{place}[{index}]")]
            return items
        if isinstance(value, dict):
            mapping: dict[Any, Any] = {}
            for key, item in value.items():
                where = f"{place}.{key}" if place else str(key)
                keys = self.spread(key, where)
                for name in keys if keys is not None else [self.text(str(key), where)]:
                    mapping[name] = self.walk(item, f"{place}.{name}" if place else name)
            return mapping
        return value


def substitute(document: Any, parameters: Mapping[str, str]) -> tuple[Any, list[Problem]]:
    """The document with its placeholders replaced, and the problems met on the way."""
    substitution = _Substitution(parameters)
    return substitution.walk(document, ""), substitution.problems
