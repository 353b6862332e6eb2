"""Where models come from and go: the cache, the Hub endpoint, the token, offline mode.

Each is a setting, else what huggingface_hub itself would read from the environment, so a
host already set up for huggingface_hub or TEI (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`,
`HF_HUB_OFFLINE`) needs no extra configuration. The TEI children get the same cache through
their environment, so they find what the registry fetched and fetch nothing themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tei_reconciler.engine.layout import hub_cache
from tei_reconciler.settings import Settings

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class HubConfig:
    cache: Path
    endpoint: str
    offline: bool
    token_file: Path | None
    max_concurrent: int

    def child_env(self) -> dict[str, str]:
        """What a TEI child needs to find the fetched models (and never fetch them itself)."""
        env = {"HF_HUB_CACHE": str(self.cache), "HUGGINGFACE_HUB_CACHE": str(self.cache)}
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env


def hub_config(settings: Settings, env: Mapping[str, str]) -> HubConfig:
    offline = settings.hf_offline
    if offline is None:
        offline = env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    endpoint = settings.hf_endpoint or env.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT
    token = settings.hf_token_file
    return HubConfig(
        cache=hub_cache(settings.huggingface_hub_cache, env).absolute(),
        endpoint=endpoint,
        offline=offline,
        token_file=Path(token).expanduser() if token else None,
        max_concurrent=settings.max_concurrent_downloads,
    )
