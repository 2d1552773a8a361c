"""Which route template a request path belongs to, and the methods served there.

Starlette names only the first route a path matched (and FastAPI's included routers keep
their paths without the prefix), so the 405 handler's `Allow` header and the request metrics'
`route` label both look the path up here instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    methods: tuple[str, ...]
    pattern: re.Pattern[str]


class RouteIndex:
    """Every path template of the app: the OpenAPI document's, and the plain routes that
    stay out of it (/docs, /openapi.json, mounted assets)."""

    def __init__(self, openapi: dict[str, Any], plain_routes: list[Any]) -> None:
        entries: list[RouteTemplate] = []
        for template, operations in openapi.get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)))
            methods = tuple(sorted(m.upper() for m in operations))
            entries.append(RouteTemplate(template, methods, pattern))
        for route in plain_routes:
            regex = getattr(route, "path_regex", None)
            template = getattr(route, "path_format", None)
            if isinstance(regex, re.Pattern) and isinstance(template, str):
                methods = tuple(sorted(getattr(route, "methods", None) or ()))
                entries.append(RouteTemplate(template, methods, regex))
        self._entries = tuple(entries)

    def match(self, path: str) -> RouteTemplate | None:
        for entry in self._entries:
            if entry.pattern.fullmatch(path):
                return entry
        return None
