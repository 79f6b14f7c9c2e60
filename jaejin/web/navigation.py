"""What each role can do, as links on its home page and in the menu.

Capabilities register their own entries at import time; the shell only renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaejin.core.accounts import Role


@dataclass(frozen=True, slots=True)
class NavLink:
    path: str
    label: str  # English msgid
    description: str  # English msgid, shown on the role's home page
    roles: frozenset[Role]
    order: int = 100


_links: list[NavLink] = []


def register(path: str, label: str, description: str, roles: set[Role] | frozenset[Role],
             order: int = 100) -> None:
    link = NavLink(path, label, description, frozenset(roles), order)
    if link not in _links:
        _links.append(link)


def links_for(roles: frozenset[Role]) -> list[NavLink]:
    visible = (link for link in _links if link.roles & roles)
    return sorted(visible, key=lambda link: (link.order, link.path))
