"""broker.xml and the users/roles/login files, parsed into frozen dataclasses.

``load_config(path)`` reads an Artemis-shaped ``broker.xml``; ``default_config()`` gives the
built-in single-broker configuration; :class:`~pybroker.config.users.Authenticator` checks
credentials against ``login.config`` and the properties files it names.
"""

from pybroker.config.model import (
    ADDRESS_SETTING_DEFAULTS,
    DEFAULT_GLOBAL_MAX_SIZE,
    PERMISSIONS,
    AcceptorConfig,
    AddressConfig,
    AddressSettings,
    ClusterConnectionConfig,
    Configuration,
    ConnectorConfig,
    HAPolicy,
    JournalConfig,
    QueueConfig,
    RoutingType,
    ScaleDownConfig,
    SecuritySetting,
    WildcardConfig,
)
from pybroker.config.parse import (
    default_config,
    instance_dir_for,
    load_config,
    parse_config,
    parse_size,
    parse_url,
)

__all__ = [
    "ADDRESS_SETTING_DEFAULTS",
    "DEFAULT_GLOBAL_MAX_SIZE",
    "PERMISSIONS",
    "AcceptorConfig",
    "AddressConfig",
    "AddressSettings",
    "ClusterConnectionConfig",
    "Configuration",
    "ConnectorConfig",
    "HAPolicy",
    "JournalConfig",
    "QueueConfig",
    "RoutingType",
    "ScaleDownConfig",
    "SecuritySetting",
    "WildcardConfig",
    "default_config",
    "instance_dir_for",
    "load_config",
    "parse_config",
    "parse_size",
    "parse_url",
]
