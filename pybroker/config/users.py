"""Users, roles and JAAS ``login.config``: who may connect, and with which roles.

An Artemis instance authenticates through the JAAS domain named in ``bootstrap.xml``
(``activemq``), whose modules are listed in ``etc/login.config``. pybroker reads that file and
implements the two modules ``artemis create`` writes:

* ``PropertiesLoginModule``: user and password from ``artemis-users.properties``
  (``user = password``, plain or ``ENC(...)``), roles from ``artemis-roles.properties``
  (``role = user1,user2``). With ``reload=true`` both files are read again when they change.
* ``GuestLoginModule``: always succeeds as the configured guest user and role, so a
  credential-less connection becomes the guest (with ``credentialsInvalidate=true`` it fails
  when a password is given).

The module flags follow JAAS: ``required`` must succeed (the others still run), ``requisite``
must succeed (stop at once if not), ``sufficient`` ends the login when it succeeds and no
required module failed before it, ``optional`` never decides alone. The login succeeds when no
required/requisite module failed and at least one module succeeded. As in Artemis, with
``sufficient`` properties and guest modules a wrong password still logs in as the guest.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pybroker.config.passwords import verify_password
from pybroker.errors import ConfigError, SecurityError

logger = logging.getLogger("pybroker.config")

PROPERTIES_LOGIN_MODULES = frozenset({
    "org.apache.activemq.artemis.spi.core.security.jaas.PropertiesLoginModule",
    "org.apache.activemq.jaas.PropertiesLoginModule",
})
GUEST_LOGIN_MODULES = frozenset({
    "org.apache.activemq.artemis.spi.core.security.jaas.GuestLoginModule",
    "org.apache.activemq.jaas.GuestLoginModule",
})
USER_FILE_OPTION = "org.apache.activemq.jaas.properties.user"
ROLE_FILE_OPTION = "org.apache.activemq.jaas.properties.role"
GUEST_USER_OPTION = "org.apache.activemq.jaas.guest.user"
GUEST_ROLE_OPTION = "org.apache.activemq.jaas.guest.role"

Flag = Literal["required", "requisite", "sufficient", "optional"]
FLAGS: tuple[Flag, ...] = ("required", "requisite", "sufficient", "optional")


# --------------------------------------------------------------------------------------------
# Java properties files

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _decode(data: bytes) -> str:
    # Java reads .properties as ISO-8859-1; files written by people today are UTF-8.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _unescape(text: str) -> str:
    out = []
    index = 0
    while index < len(text):
        ch = text[index]
        if ch != "\\" or index + 1 >= len(text):
            out.append(ch)
            index += 1
            continue
        nxt = text[index + 1]
        if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[index + 2:index + 6]):
            out.append(chr(int(text[index + 2:index + 6], 16)))
            index += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        index += 2
    return "".join(out)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) with continuations joined and comments dropped."""
    lines = text.splitlines()
    result: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        start = index
        line = lines[index].lstrip(" \t\f")
        index += 1
        if not line or line[0] in "#!":
            continue
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 1 and index < len(lines):
                line = line[:-1] + lines[index].lstrip(" \t\f")
                index += 1
            else:
                if trailing % 2 == 1:
                    line = line[:-1]
                break
        result.append((start + 1, line))
    return result


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java ``.properties`` text (``#``/``!`` comments, ``=``, ``:`` or space
    separators, backslash escapes and continuation lines). Later keys win."""
    properties: dict[str, str] = {}
    for _, line in _logical_lines(text):
        key_end = 0
        while key_end < len(line):
            ch = line[key_end]
            if ch == "\\":
                key_end += 2
                continue
            if ch in "=: \t\f":
                break
            key_end += 1
        key = line[:key_end]
        rest = line[key_end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        properties[_unescape(key)] = _unescape(rest)
    return properties


def _read(path: Path, what: str) -> str:
    try:
        return _decode(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read {what}: {error.strerror or error}",
                          file=str(path)) from None


def load_users(path: Path | str) -> dict[str, str]:
    """``artemis-users.properties``: user -> stored password (plain or ``ENC(...)``)."""
    path = Path(path)
    return parse_properties(_read(path, "users file"))


def _roles_from(properties: Mapping[str, str]) -> dict[str, frozenset[str]]:
    return {
        role: frozenset(user.strip() for user in users.split(",") if user.strip())
        for role, users in properties.items()
    }


def load_roles(path: Path | str) -> dict[str, frozenset[str]]:
    """``artemis-roles.properties``: role -> the users holding it (``role = u1,u2``)."""
    path = Path(path)
    return _roles_from(parse_properties(_read(path, "roles file")))


# --------------------------------------------------------------------------------------------
# login.config


@dataclass(frozen=True)
class LoginModuleConfig:
    """One login module line of a JAAS domain."""

    class_name: str
    flag: Flag
    options: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class LoginConfig:
    """A parsed JAAS configuration: domain name -> its modules, in order."""

    domains: Mapping[str, tuple[LoginModuleConfig, ...]]
    file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", MappingProxyType(dict(self.domains)))

    def domain(self, name: str) -> tuple[LoginModuleConfig, ...]:
        """The modules of domain ``name``; ConfigError if there is no such domain."""
        try:
            return self.domains[name]
        except KeyError:
            known = ", ".join(sorted(self.domains)) or "none"
            raise ConfigError(f"no JAAS domain {name!r} (domains: {known})",
                              file=self.file) from None


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<line_comment>//[^\n]*|\#[^\n]*)
      | (?P<block_comment>/\*.*?\*/)
      | (?P<quoted>"(?:[^"\\]|\\.)*")
      | (?P<punct>[{};=])
      | (?P<word>[^\s{};="]+)""",
    re.VERBOSE | re.DOTALL,
)
_EXPAND = re.compile(r"\$\{([^}]*)\}")


def _tokens(text: str, file: str) -> list[tuple[str, str, int]]:
    """(kind, value, line) tokens of a login.config; kinds: word, quoted, punct."""
    tokens = []
    position = 0
    line = 1
    while position < len(text):
        if text.startswith("/*", position) and text.find("*/", position + 2) == -1:
            raise ConfigError("unterminated /* comment", file=file, line=line)
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConfigError(f"unexpected character {text[position]!r}", file=file, line=line)
        kind = match.lastgroup
        value = match.group()
        if kind == "quoted":
            tokens.append(("quoted", _unescape(value[1:-1]), line))
        elif kind in ("punct", "word"):
            tokens.append((kind, value, line))
        line += value.count("\n")
        position = match.end()
    return tokens


def _expand(value: str, file: str, line: int) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name in os.environ:
            return os.environ[name]
        raise ConfigError(f"cannot expand ${{{name}}}: no such environment variable",
                          file=file, line=line)

    return _EXPAND.sub(replace, value)


def parse_login_config_text(text: str, *, file: str = "<string>") -> LoginConfig:
    """Parse JAAS configuration text: ``Domain { Class flag key=value ...; ... };``."""
    tokens = _tokens(text, file)
    position = 0

    def peek() -> tuple[str, str, int] | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None, what: str = "") -> tuple[str, str, int]:
        nonlocal position
        token = peek()
        if token is None:
            last_line = tokens[-1][2] if tokens else 1
            raise ConfigError(f"unexpected end of file, expected {what or expected!r}",
                              file=file, line=last_line)
        if expected is not None and not (token[0] == "punct" and token[1] == expected):
            raise ConfigError(f"expected {expected!r} but found {token[1]!r}",
                              file=file, line=token[2])
        position += 1
        return token

    domains: dict[str, tuple[LoginModuleConfig, ...]] = {}
    while peek() is not None:
        kind, name, line = take(what="a domain name")
        if kind == "punct":
            raise ConfigError(f"expected a domain name but found {name!r}", file=file,
                              line=line)
        take("{")
        modules: list[LoginModuleConfig] = []
        while True:
            token = peek()
            if token is not None and token[0] == "punct" and token[1] == "}":
                take("}")
                break
            kind, class_name, module_line = take(what="a login module class or '}'")
            if kind != "word":
                raise ConfigError(f"expected a login module class but found {class_name!r}",
                                  file=file, line=module_line)
            kind, flag, flag_line = take(what="a control flag")
            if kind != "word" or flag.lower() not in FLAGS:
                raise ConfigError(
                    f"bad control flag {flag!r} for {class_name}: expected required, "
                    "requisite, sufficient or optional", file=file, line=flag_line)
            options: dict[str, str] = {}
            while True:
                token = peek()
                if token is not None and token[0] == "punct" and token[1] == ";":
                    take(";")
                    break
                kind, key, key_line = take(what="an option or ';'")
                if kind != "word":
                    raise ConfigError(f"expected an option name but found {key!r}",
                                      file=file, line=key_line)
                take("=")
                kind, value, value_line = take(what="an option value")
                if kind == "punct":
                    raise ConfigError(f"expected a value for option {key!r}", file=file,
                                      line=value_line)
                options[key] = _expand(value, file, value_line)
            modules.append(LoginModuleConfig(class_name, flag.lower(), options,  # type: ignore[arg-type]
                                             module_line))
        token = peek()
        if token is not None and token[0] == "punct" and token[1] == ";":
            take(";")
        if name in domains:
            raise ConfigError(f"JAAS domain {name!r} is defined twice", file=file, line=line)
        domains[name] = tuple(modules)
    return LoginConfig(domains, file=file)


def parse_login_config(path: Path | str) -> LoginConfig:
    """Read and parse a JAAS ``login.config`` file."""
    path = Path(path)
    return parse_login_config_text(_read(path, "login config"), file=str(path))


# --------------------------------------------------------------------------------------------
# Authentication


@dataclass(frozen=True)
class Principal:
    """An authenticated connection: its user name and roles."""

    user: str
    roles: frozenset[str] = frozenset()


class _PropertiesFile:
    """A properties file read once, or again whenever it changes when ``reload`` is set."""

    def __init__(self, path: Path, what: str, reload: bool) -> None:
        self.path = path
        self.what = what
        self.reload = reload
        self._signature: tuple[int, int, int] | None = None
        self.values: dict[str, str] = {}
        self._load(initial=True)

    def _stat(self) -> tuple[int, int, int]:
        status = self.path.stat()
        return status.st_mtime_ns, status.st_size, status.st_ino

    def _load(self, *, initial: bool) -> None:
        try:
            signature = self._stat()
            values = parse_properties(_decode(self.path.read_bytes()))
        except OSError as error:
            if initial:
                raise ConfigError(f"cannot read {self.what}: {error.strerror or error}",
                                  file=str(self.path)) from None
            logger.warning("cannot re-read %s %s (%s); keeping the previous contents",
                           self.what, self.path, error.strerror or error)
            return
        self._signature = signature
        self.values = values
        if not initial:
            logger.info("reloaded %s %s", self.what, self.path)

    def current(self) -> dict[str, str]:
        if self.reload:
            try:
                signature = self._stat()
            except OSError:
                signature = None
            if signature is not None and signature != self._signature:
                self._load(initial=False)
        return self.values


class _LoginFailed(Exception):
    pass


class _PropertiesModule:
    def __init__(self, config: LoginModuleConfig, base_dir: Path) -> None:
        options = config.options
        base = Path(options["baseDir"]) if "baseDir" in options else base_dir
        reload = options.get("reload", "false").lower() == "true"
        self.flag = config.flag
        self.users = _PropertiesFile(base / options.get(USER_FILE_OPTION, "user"),
                                     "users file", reload)
        self.roles = _PropertiesFile(base / options.get(ROLE_FILE_OPTION, "role"),
                                     "roles file", reload)

    def login(self, user: str | None, password: str | None) -> list[str]:
        if user is None:
            raise _LoginFailed("no user name given")
        stored = self.users.current().get(user)
        if stored is None:
            raise _LoginFailed(f"unknown user {user!r}")
        if not verify_password(stored, password or ""):
            raise _LoginFailed(f"wrong password for user {user!r}")
        return [user]

    def roles_of(self, users: list[str]) -> set[str]:
        found: set[str] = set()
        for role, members in _roles_from(self.roles.current()).items():
            if any(user in members for user in users):
                found.add(role)
        return found


class _GuestModule:
    def __init__(self, config: LoginModuleConfig) -> None:
        options = config.options
        self.flag = config.flag
        self.user = options.get(GUEST_USER_OPTION, "guest")
        self.role = options.get(GUEST_ROLE_OPTION, "guests")
        self.credentials_invalidate = options.get("credentialsInvalidate",
                                                  "false").lower() == "true"

    def login(self, user: str | None, password: str | None) -> list[str]:
        if self.credentials_invalidate and password is not None:
            raise _LoginFailed("credentials given to a guest login that refuses them")
        return [self.user]


class _UnsupportedModule:
    def __init__(self, config: LoginModuleConfig) -> None:
        self.flag = config.flag
        self.class_name = config.class_name

    def login(self, user: str | None, password: str | None) -> list[str]:
        raise _LoginFailed(f"login module {self.class_name} is not supported by pybroker")


class Authenticator:
    """Authenticates connections against one JAAS domain of a login.config."""

    def __init__(self, login_config: LoginConfig, *, base_dir: Path | str,
                 domain: str = "activemq") -> None:
        self.domain = domain
        base = Path(base_dir)
        self._modules: list[_PropertiesModule | _GuestModule | _UnsupportedModule] = []
        for config in login_config.domain(domain):
            if config.class_name in PROPERTIES_LOGIN_MODULES:
                self._modules.append(_PropertiesModule(config, base))
            elif config.class_name in GUEST_LOGIN_MODULES:
                self._modules.append(_GuestModule(config))
            elif config.flag == "optional":
                logger.warning("%s:%s: optional login module %s is not supported by pybroker "
                               "and never succeeds", login_config.file, config.line,
                               config.class_name)
                self._modules.append(_UnsupportedModule(config))
            else:
                raise ConfigError(
                    f"login module {config.class_name} ({config.flag}) is not supported: "
                    "pybroker implements PropertiesLoginModule and GuestLoginModule",
                    file=login_config.file, line=config.line)
        if not self._modules:
            raise ConfigError(f"JAAS domain {domain!r} has no login modules",
                              file=login_config.file)

    @classmethod
    def from_etc(cls, etc_dir: Path | str, domain: str = "activemq") -> Authenticator:
        """Read ``<etc_dir>/login.config`` and the properties files it names (relative
        to ``etc_dir`` unless a module sets ``baseDir``)."""
        etc = Path(etc_dir)
        return cls(parse_login_config(etc / "login.config"), base_dir=etc, domain=domain)

    @property
    def allows_anonymous(self) -> bool:
        """Whether a credential-less connection could log in (a guest module is present)."""
        return any(isinstance(module, _GuestModule) for module in self._modules)

    def authenticate(self, user: str | None, password: str | None) -> Principal:
        """Log in ``user`` (None = no credentials); raises :class:`SecurityError`."""
        invoked: list[tuple[_PropertiesModule | _GuestModule | _UnsupportedModule,
                            list[str] | None]] = []
        required_failure: str | None = None
        first_failure: str | None = None
        succeeded = False
        for module in self._modules:
            try:
                users = module.login(user, password)
            except _LoginFailed as failure:
                invoked.append((module, None))
                reason = str(failure)
                logger.debug("login module %s (%s) failed: %s", type(module).__name__,
                             module.flag, reason)
                if module.flag == "requisite":
                    required_failure = required_failure or reason
                    break
                if module.flag == "required":
                    required_failure = required_failure or reason
                else:
                    first_failure = first_failure or reason
                continue
            invoked.append((module, users))
            succeeded = True
            if module.flag == "sufficient" and required_failure is None:
                break
        if required_failure is not None or not succeeded:
            raise SecurityError(self._refusal(user, required_failure or first_failure))
        # Commit, in order: each successful module adds its user; a properties module adds
        # the roles of every user added so far (as Artemis's PropertiesLoginModule.commit).
        principals: list[str] = []
        roles: set[str] = set()
        for module, users in invoked:
            if users is not None:
                for name in users:
                    if name not in principals:
                        principals.append(name)
                if isinstance(module, _GuestModule):
                    roles.add(module.role)
            if isinstance(module, _PropertiesModule):
                roles |= module.roles_of(principals)
        return Principal(user=principals[0], roles=frozenset(roles))

    def _refusal(self, user: str | None, reason: str | None) -> str:
        if user is None:
            if not self.allows_anonymous:
                return (f"anonymous login refused: JAAS domain {self.domain!r} has no guest "
                        "login module, so a connection needs a user name and password")
            return f"anonymous login refused: {reason or 'no login module succeeded'}"
        if reason is not None and (reason.startswith("unknown user")
                                   or reason.startswith("wrong password")):
            return f"authentication failed for user {user!r}: bad user name or password"
        return f"authentication failed for user {user!r}: {reason or 'no login module succeeded'}"


__all__ = [
    "Authenticator",
    "LoginConfig",
    "LoginModuleConfig",
    "Principal",
    "load_roles",
    "load_users",
    "parse_login_config",
    "parse_login_config_text",
    "parse_properties",
]
