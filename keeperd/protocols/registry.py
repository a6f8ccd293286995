"""From a config entry's `kind` to the plug-in that runs it.

Built-in plug-ins are named here, one line each, and imported only when used. Others (an
operator's own protocol, the test suite's toy protocol) register themselves with `register`
from a module named in `KEEPERD_PLUGINS` (comma-separated module names, imported when a config
is loaded): their config model then validates like the built-in ones.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, TypeVar

from pydantic import BaseModel

from keeperd.protocols.sdk.contract import PluginBase

P = TypeVar("P", bound=PluginBase)

BUILT_IN: dict[str, str] = {
    "aave_v3": "keeperd.protocols.aave_v3.adapter:AaveV3Adapter",
    "morpho_blue": "keeperd.protocols.morpho_blue.adapter:MorphoBlueAdapter",
    "perp_curie": "keeperd.protocols.perp_curie.adapter:PerpCurieAdapter",
}

_registered: dict[str, type[PluginBase]] = {}
_loaded_env: str | None = None


def register(plugin: type[P]) -> type[P]:
    """Class decorator: `plugin.kind` runs with this class; `plugin.config_model` validates
    its config entries (a pydantic model whose `kind` is a Literal of that kind). A plug-in
    subclasses `PluginBase` (the optional hooks, defaulted)."""
    if not (isinstance(plugin, type) and issubclass(plugin, PluginBase)):
        raise TypeError(f"{plugin!r} does not subclass keeperd.protocols.sdk.contract.PluginBase")
    _registered[getattr(plugin, "kind")] = plugin  # noqa: B009 (a class attribute)
    return plugin


def load_env_plugins() -> None:
    """Import the modules named in KEEPERD_PLUGINS (once per value of the variable)."""
    global _loaded_env
    value = os.environ.get("KEEPERD_PLUGINS", "")
    if value == _loaded_env:
        return
    for name in filter(None, (n.strip() for n in value.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"KEEPERD_PLUGINS names {name!r}, which does not import: {exc}"
                             ) from None
    _loaded_env = value


def plugin_class(kind: str) -> type[PluginBase] | None:
    """The plug-in class for `kind`, or None when it only is a venue keeperd polls."""
    if kind in _registered:
        return _registered[kind]
    path = BUILT_IN.get(kind)
    if path is None:
        return None
    module, attr = path.split(":")
    cls = getattr(importlib.import_module(module), attr)
    assert issubclass(cls, PluginBase), cls
    return cls


def extra_config_model(kind: Any) -> type[BaseModel] | None:
    """The config model of a registered (not built-in) plug-in kind."""
    load_env_plugins()
    plugin = _registered.get(kind) if isinstance(kind, str) else None
    return getattr(plugin, "config_model", None) if plugin is not None else None


def is_chain_protocol(config: Any) -> bool:
    """An on-chain protocol run by a plug-in (not a perp venue polled over its API)."""
    return plugin_class(getattr(config, "kind", "")) is not None


def create(config: Any, chain: Any, pool: Any, store: Any, metrics: Any) -> Any:
    """The plug-in for one config entry, on its chain's RPC pool, with the account index's
    store (`storage.account_index.IndexStore`) and the metrics registry."""
    cls = plugin_class(config.kind)
    if cls is None:
        raise ValueError(f"protocol kind {config.kind!r} has no plug-in")
    return cls(config, chain, pool, store, metrics)
