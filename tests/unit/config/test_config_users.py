"""Users, roles, login.config and JAAS-style authentication."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pybroker.config.passwords import hash_password
from pybroker.config.users import (
    Authenticator,
    LoginConfig,
    LoginModuleConfig,
    Principal,
    load_roles,
    load_users,
    parse_login_config,
    parse_login_config_text,
    parse_properties,
)
from pybroker.errors import ConfigError, SecurityError

PROPERTIES = "org.apache.activemq.artemis.spi.core.security.jaas.PropertiesLoginModule"
GUEST = "org.apache.activemq.artemis.spi.core.security.jaas.GuestLoginModule"

LOGIN_WITH_GUEST = f"""activemq {{
   {PROPERTIES} sufficient
       debug=false
       reload=true
       org.apache.activemq.jaas.properties.user="artemis-users.properties"
       org.apache.activemq.jaas.properties.role="artemis-roles.properties";

   {GUEST} sufficient
       debug=false
       org.apache.activemq.jaas.guest.user="admin"
       org.apache.activemq.jaas.guest.role="amq";
}};
"""

LOGIN_WITHOUT_GUEST = f"""activemq {{
   {PROPERTIES} required
       debug=false
       reload=true
       org.apache.activemq.jaas.properties.user="artemis-users.properties"
       org.apache.activemq.jaas.properties.role="artemis-roles.properties";
}};
"""


def write_etc(etc: Path, login: str, users: str = "admin = secret\nbob = pw\n",
              roles: str = "amq = admin\nreaders = bob, admin\n") -> Path:
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "login.config").write_text(login)
    (etc / "artemis-users.properties").write_text(users)
    (etc / "artemis-roles.properties").write_text(roles)
    return etc


def bump_mtime(path: Path) -> None:
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 5_000_000_000))


# --------------------------------------------------------------------------------------------
# Properties files


def test_parse_properties_syntax():
    text = (
        "# comment\n"
        "! also a comment\n"
        "   \n"
        "a=1\n"
        "b : 2\n"
        "c 3\n"
        "  d   =   spaced value  \n"
        "e=\n"
        "f\n"
        "key\\ with\\ spaces = v\n"
        "colon\\:key=v2\n"
        "tab=\\tx\\n\n"
        "uni=\\u00e9t\\u00E9\n"
        "long = one, \\\n"
        "       two, \\\n"
        "       three\n"
        "back=slash\\\\\n"
        "a=again\n"
    )
    assert parse_properties(text) == {
        "a": "again", "b": "2", "c": "3", "d": "spaced value  ", "e": "", "f": "",
        "key with spaces": "v", "colon:key": "v2", "tab": "\tx\n", "uni": "été",
        "long": "one, two, three", "back": "slash\\",
    }


def test_parse_properties_continuation_at_end_of_file():
    assert parse_properties("a = x\\") == {"a": "x"}


def test_load_users_and_roles(tmp_path):
    (tmp_path / "u.properties").write_text("admin = ENC(1024:AB:CD)\nbob=pw\n")
    (tmp_path / "r.properties").write_bytes("amq = admin, bob\nempty =\nnaïve = x\n"
                                            .encode())
    assert load_users(tmp_path / "u.properties") == {"admin": "ENC(1024:AB:CD)", "bob": "pw"}
    assert load_roles(tmp_path / "r.properties") == {
        "amq": frozenset({"admin", "bob"}), "empty": frozenset(), "naïve": frozenset({"x"})}


def test_latin1_properties_file(tmp_path):
    (tmp_path / "u.properties").write_bytes("user=caf\xe9\n".encode("latin-1"))
    assert load_users(tmp_path / "u.properties") == {"user": "café"}


def test_missing_users_file(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_users(tmp_path / "missing.properties")
    assert raised.value.file == str(tmp_path / "missing.properties")


# --------------------------------------------------------------------------------------------
# login.config


def test_parse_login_config_create_style():
    config = parse_login_config_text(LOGIN_WITH_GUEST, file="login.config")
    [properties, guest] = config.domain("activemq")
    assert (properties.class_name, properties.flag, properties.line) == \
        (PROPERTIES, "sufficient", 2)
    assert dict(properties.options) == {
        "debug": "false", "reload": "true",
        "org.apache.activemq.jaas.properties.user": "artemis-users.properties",
        "org.apache.activemq.jaas.properties.role": "artemis-roles.properties"}
    assert (guest.class_name, guest.flag, guest.line) == (GUEST, "sufficient", 8)
    assert guest.options["org.apache.activemq.jaas.guest.user"] == "admin"


def test_parse_login_config_domains_comments_and_quotes():
    config = parse_login_config_text("""
        // a line comment
        /* a block
           comment */
        # a hash comment
        first {
            x.Module REQUIRED a="with \\"quotes\\" and spaces" b=plain;
            y.Module Optional;
        };
        second { z.Module requisite; }
        empty { };
        """)
    assert list(config.domains) == ["first", "second", "empty"]
    x, y = config.domain("first")
    assert (x.flag, dict(x.options)) == ("required", {"a": 'with "quotes" and spaces',
                                                      "b": "plain"})
    assert (y.flag, dict(y.options)) == ("optional", {})
    assert config.domain("second")[0].flag == "requisite"
    assert config.domain("empty") == ()


def test_login_config_expands_environment(monkeypatch):
    monkeypatch.setenv("PYBROKER_ETC", "/etc/pb")
    config = parse_login_config_text('d { m.M required baseDir="${PYBROKER_ETC}/x"; };')
    assert config.domain("d")[0].options["baseDir"] == "/etc/pb/x"


@pytest.mark.parametrize(("text", "message", "line"), [
    ("d { m.M mandatory; };", "bad control flag 'mandatory'", 1),
    ("d {\n m.M required a=; };", "expected a value for option 'a'", 2),
    ("d {\n m.M required a b; };", "expected '='", 2),
    ("d { m.M required;", "unexpected end of file", 1),
    ("d m.M required; };", "expected '{'", 1),
    ("d { m.M required; };\nd { m.M required; };", "defined twice", 2),
    ("/* never closed\nd { };", "unterminated", 1),
    ('d { m.M required a="${PYBROKER_SURELY_UNSET_VARIABLE}"; };', "cannot expand", 1),
])
def test_login_config_errors(text, message, line):
    with pytest.raises(ConfigError) as raised:
        parse_login_config_text(text, file="login.config")
    assert message in str(raised.value)
    assert (raised.value.file, raised.value.line) == ("login.config", line)


def test_missing_domain(tmp_path):
    etc = write_etc(tmp_path / "etc", LOGIN_WITH_GUEST)
    with pytest.raises(ConfigError, match="no JAAS domain 'other'"):
        Authenticator.from_etc(etc, domain="other")
    assert parse_login_config(etc / "login.config").file == str(etc / "login.config")


# --------------------------------------------------------------------------------------------
# Authentication


def test_allow_anonymous_instance(tmp_path):
    auth = Authenticator.from_etc(write_etc(tmp_path / "etc", LOGIN_WITH_GUEST))
    assert auth.allows_anonymous
    assert auth.authenticate(None, None) == Principal("admin", frozenset({"amq"}))
    assert auth.authenticate("bob", "pw") == Principal("bob", frozenset({"readers"}))
    assert auth.authenticate("admin", "secret") == Principal("admin",
                                                             frozenset({"amq", "readers"}))
    # As in Artemis: with both modules sufficient, bad credentials fall through to the guest.
    assert auth.authenticate("bob", "wrong") == Principal("admin", frozenset({"amq"}))
    assert auth.authenticate("nobody", "x") == Principal("admin", frozenset({"amq"}))


def test_require_login_instance(tmp_path):
    auth = Authenticator.from_etc(write_etc(tmp_path / "etc", LOGIN_WITHOUT_GUEST))
    assert not auth.allows_anonymous
    assert auth.authenticate("bob", "pw").roles == frozenset({"readers"})
    with pytest.raises(SecurityError) as raised:
        auth.authenticate(None, None)
    assert "anonymous login refused" in str(raised.value)
    assert "no guest login module" in str(raised.value)
    with pytest.raises(SecurityError, match="bad user name or password"):
        auth.authenticate("bob", "wrong")
    with pytest.raises(SecurityError, match="bad user name or password"):
        auth.authenticate("nobody", "pw")
    with pytest.raises(SecurityError):
        auth.authenticate("bob", None)


def test_hashed_passwords(tmp_path):
    etc = write_etc(tmp_path / "etc", LOGIN_WITHOUT_GUEST,
                    users=f"admin = {hash_password('s3cret!')}\n")
    auth = Authenticator.from_etc(etc)
    assert auth.authenticate("admin", "s3cret!").user == "admin"
    with pytest.raises(SecurityError):
        auth.authenticate("admin", "s3cret")


def test_empty_password_user(tmp_path):
    auth = Authenticator.from_etc(write_etc(tmp_path / "etc", LOGIN_WITHOUT_GUEST,
                                            users="open =\n"))
    assert auth.authenticate("open", None).user == "open"
    assert auth.authenticate("open", "").user == "open"


def test_reload_on_change(tmp_path, caplog):
    etc = write_etc(tmp_path / "etc", LOGIN_WITHOUT_GUEST)
    auth = Authenticator.from_etc(etc)
    with pytest.raises(SecurityError):
        auth.authenticate("carol", "c")
    users = etc / "artemis-users.properties"
    users.write_text("carol = c\n")
    (etc / "artemis-roles.properties").write_text("ops = carol\n")
    bump_mtime(users)
    bump_mtime(etc / "artemis-roles.properties")
    with caplog.at_level(logging.INFO, logger="pybroker.config"):
        assert auth.authenticate("carol", "c") == Principal("carol", frozenset({"ops"}))
    assert any("reloaded" in r.getMessage() for r in caplog.records)
    with pytest.raises(SecurityError):
        auth.authenticate("bob", "pw")  # removed from the file


def test_reload_keeps_the_old_contents_when_the_file_vanishes(tmp_path):
    etc = write_etc(tmp_path / "etc", LOGIN_WITHOUT_GUEST)
    auth = Authenticator.from_etc(etc)
    (etc / "artemis-users.properties").unlink()
    assert auth.authenticate("bob", "pw").user == "bob"


def test_no_reload_without_the_option(tmp_path):
    login = LOGIN_WITHOUT_GUEST.replace("reload=true", "reload=false")
    etc = write_etc(tmp_path / "etc", login)
    auth = Authenticator.from_etc(etc)
    users = etc / "artemis-users.properties"
    users.write_text("carol = c\n")
    bump_mtime(users)
    with pytest.raises(SecurityError):
        auth.authenticate("carol", "c")
    assert auth.authenticate("bob", "pw").user == "bob"


def test_files_relative_to_base_dir_option(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "u").write_text("x = y\n")
    (other / "r").write_text("role = x\n")
    config = LoginConfig({"activemq": (LoginModuleConfig(PROPERTIES, "required", {
        "baseDir": str(other), "org.apache.activemq.jaas.properties.user": "u",
        "org.apache.activemq.jaas.properties.role": "r"}),)})
    auth = Authenticator(config, base_dir=tmp_path)
    assert auth.authenticate("x", "y") == Principal("x", frozenset({"role"}))


def test_missing_properties_file_is_a_config_error(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "login.config").write_text(LOGIN_WITHOUT_GUEST)
    with pytest.raises(ConfigError, match="users file"):
        Authenticator.from_etc(etc)


def module(class_name: str, flag: str, **options: str) -> LoginModuleConfig:
    return LoginModuleConfig(class_name, flag, options)  # type: ignore[arg-type]


def properties_module(flag: str) -> LoginModuleConfig:
    return module(PROPERTIES, flag, **{
        "org.apache.activemq.jaas.properties.user": "artemis-users.properties",
        "org.apache.activemq.jaas.properties.role": "artemis-roles.properties"})


def guest_module(flag: str, **options: str) -> LoginModuleConfig:
    options.setdefault("org.apache.activemq.jaas.guest.user", "guest")
    options.setdefault("org.apache.activemq.jaas.guest.role", "guests")
    return module(GUEST, flag, **options)


def authenticator(tmp_path: Path, *modules: LoginModuleConfig) -> Authenticator:
    write_etc(tmp_path, "unused")
    return Authenticator(LoginConfig({"activemq": modules}), base_dir=tmp_path)


def test_required_properties_then_optional_guest(tmp_path):
    auth = authenticator(tmp_path, properties_module("required"), guest_module("optional"))
    # The required module failed: the optional guest cannot rescue the login.
    with pytest.raises(SecurityError):
        auth.authenticate(None, None)
    with pytest.raises(SecurityError):
        auth.authenticate("bob", "wrong")
    # Both succeed: both principals, the first user is reported.
    principal = auth.authenticate("bob", "pw")
    assert principal.user == "bob"
    assert principal.roles == frozenset({"readers", "guests"})


def test_requisite_failure_stops_at_once(tmp_path):
    auth = authenticator(tmp_path, properties_module("requisite"), guest_module("sufficient"))
    with pytest.raises(SecurityError):
        auth.authenticate(None, None)
    assert auth.authenticate("bob", "pw").user == "bob"


def test_sufficient_success_skips_the_rest(tmp_path):
    auth = authenticator(tmp_path, guest_module("sufficient"), properties_module("required"))
    # The guest succeeds first and ends the login before the required module runs.
    assert auth.authenticate("bob", "wrong") == Principal("guest", frozenset({"guests"}))


def test_sufficient_after_a_failed_required_does_not_end_the_login(tmp_path):
    auth = authenticator(tmp_path, properties_module("required"), guest_module("sufficient"))
    with pytest.raises(SecurityError):
        auth.authenticate(None, None)


def test_guest_before_properties_gets_the_guests_roles_from_the_roles_file(tmp_path):
    write_etc(tmp_path, "unused", roles="extra = guest\n")
    auth = Authenticator(LoginConfig({"activemq": (
        guest_module("optional"), properties_module("optional"))}), base_dir=tmp_path)
    assert auth.authenticate(None, None) == Principal("guest", frozenset({"guests", "extra"}))


def test_guest_credentials_invalidate(tmp_path):
    auth = authenticator(tmp_path, properties_module("sufficient"),
                         guest_module("sufficient", credentialsInvalidate="true"))
    assert auth.authenticate(None, None).user == "guest"
    assert auth.authenticate("bob", "pw").user == "bob"
    with pytest.raises(SecurityError):
        auth.authenticate("bob", "wrong")


def test_guest_defaults(tmp_path):
    auth = authenticator(tmp_path, module(GUEST, "required"))
    assert auth.authenticate(None, None) == Principal("guest", frozenset({"guests"}))


def test_legacy_module_names(tmp_path):
    auth = authenticator(tmp_path, module("org.apache.activemq.jaas.GuestLoginModule",
                                          "required"))
    assert auth.authenticate(None, None).user == "guest"


def test_unknown_required_module_is_a_config_error(tmp_path):
    ldap = "org.apache.activemq.artemis.spi.core.security.jaas.LDAPLoginModule"
    text = f"activemq {{\n  {ldap} required connectionURL=\"ldap://x\";\n}};"
    etc = write_etc(tmp_path / "etc", text)
    with pytest.raises(ConfigError) as raised:
        Authenticator.from_etc(etc)
    assert ldap in str(raised.value)
    assert raised.value.line == 2
    assert raised.value.file == str(etc / "login.config")


def test_unknown_optional_module_is_skipped_with_a_warning(tmp_path, caplog):
    cert = "org.apache.activemq.artemis.spi.core.security.jaas.TextFileCertificateLoginModule"
    with caplog.at_level(logging.WARNING, logger="pybroker.config"):
        auth = authenticator(tmp_path, module(cert, "optional"), properties_module("required"))
    assert any(cert in r.getMessage() for r in caplog.records)
    assert auth.authenticate("bob", "pw").user == "bob"
    with pytest.raises(SecurityError):
        auth.authenticate("bob", "nope")


def test_only_an_unsupported_optional_module_refuses_everyone(tmp_path):
    auth = authenticator(tmp_path, module("x.Cert", "optional"))
    with pytest.raises(SecurityError, match="not supported"):
        auth.authenticate("bob", "pw")


def test_empty_domain_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no login modules"):
        Authenticator(LoginConfig({"activemq": ()}), base_dir=tmp_path)
