"""Platform configuration: collectivités, circuits, counterparts, as YAML validated on load."""

from flows.config.models import (
    AlertSettings,
    ArchiveProfile,
    Collectivite,
    ConfigError,
    Official,
    PlatformConfig,
    Step,
    load_config,
)

__all__ = [
    "AlertSettings",
    "ArchiveProfile",
    "Collectivite",
    "ConfigError",
    "Official",
    "PlatformConfig",
    "Step",
    "load_config",
]
