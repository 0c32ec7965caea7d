"""Authentication and authorisation as the broker core applies them.

Authentication is delegated to the :class:`~pybroker.config.users.Authenticator` built from the
instance's ``login.config`` (properties and guest login modules). Authorisation follows
``<security-settings>``: the most specific match for the address (no merging, Artemis semantics)
lists the roles allowed each permission; a permission the match does not name is denied.
Decisions are cached per (user, address, permission) up to ``authorization-cache-size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pybroker.errors import SecurityError

log = logging.getLogger("pybroker.security")

PERMISSIONS = (
    "send",
    "consume",
    "browse",
    "createAddress",
    "deleteAddress",
    "createDurableQueue",
    "deleteDurableQueue",
    "createNonDurableQueue",
    "deleteNonDurableQueue",
    "manage",
    "view",
    "edit",
)


@dataclass(frozen=True)
class Principal:
    """An authenticated user and its roles."""

    user: str | None
    roles: frozenset[str]


ANONYMOUS_SUPERUSER = Principal(user=None, roles=frozenset())


class _Authenticator(Protocol):
    def authenticate(self, user: str | None, password: str | None) -> object: ...


class _SecurityRepository(Protocol):
    def match(self, address: str) -> object | None: ...


class SecurityStore:
    """Checks credentials and permissions; with ``enabled=False`` everything is allowed."""

    def __init__(
        self,
        *,
        enabled: bool,
        authenticator: _Authenticator | None,
        repository: _SecurityRepository | None,
        cache_size: int = 1000,
    ) -> None:
        self.enabled = enabled
        self._authenticator = authenticator
        self._repository = repository
        self._cache: dict[tuple[str | None, str, str], bool] = {}
        self._cache_size = max(0, cache_size)

    def authenticate(self, user: str | None, password: str | None) -> Principal:
        """Returns the principal or raises :class:`SecurityError` (AMQ229031-style message)."""
        if not self.enabled:
            return Principal(user=user, roles=frozenset())
        if self._authenticator is None:
            raise SecurityError("security is enabled but no login configuration was found")
        principal = self._authenticator.authenticate(user, password)
        roles = frozenset(getattr(principal, "roles", frozenset()))
        return Principal(user=getattr(principal, "user", user), roles=roles)

    def allows_anonymous(self) -> bool:
        """Whether a client without credentials may connect (security off, or a guest login)."""
        if not self.enabled:
            return True
        if self._authenticator is None:
            return False
        allows = getattr(self._authenticator, "allows_anonymous", None)
        if allows is not None:
            return bool(allows() if callable(allows) else allows)
        try:
            self._authenticator.authenticate(None, None)
        except SecurityError:
            return False
        return True

    def check(self, principal: Principal, address: str, permission: str, queue: str | None = None) -> None:
        """Raise :class:`SecurityError` unless ``principal`` holds ``permission`` on ``address``."""
        if not self.enabled:
            return
        key = (principal.user, address if queue is None else f"{address}::{queue}", permission)
        allowed = self._cache.get(key)
        if allowed is None:
            allowed = self._decide(principal, address, permission, queue)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            if self._cache_size:
                self._cache[key] = allowed
        if not allowed:
            raise SecurityError(
                f"AMQ229032: User: {principal.user} does not have permission='{permission}' "
                f"on address {address}" + (f"::{queue}" if queue else "")
            )

    def _decide(self, principal: Principal, address: str, permission: str, queue: str | None) -> bool:
        if self._repository is None:
            return False
        match_queue = getattr(self._repository, "match_queue", None)
        if match_queue is not None:
            setting = match_queue(address, queue)
        else:
            setting = self._repository.match(address)
        if setting is None:
            return False
        permissions = getattr(setting, "permissions", setting)
        roles = permissions.get(permission)
        if not roles:
            return False
        return bool(principal.roles & frozenset(roles))

    def invalidate(self) -> None:
        self._cache.clear()
