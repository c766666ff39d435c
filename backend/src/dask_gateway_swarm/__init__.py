"""A Dask Gateway backend that runs schedulers and workers as Docker Swarm services."""

__version__ = "0.1.0"

__all__ = (
    "GatewayUser",
    "JupyterHubAuthenticator",
    "SwarmBackend",
    "SwarmClusterConfig",
    "UserLimitsMixin",
    "UsersAuthenticator",
    "parse_memory",
    "swarm_cluster_options",
    "__version__",
)

# Imported lazily (PEP 562): the scheduler preload lives in this package and
# must not pay for importing the gateway server, SQLAlchemy and the Docker SDK
# in every scheduler.
_LAZY = {
    "GatewayUser": "auth",
    "JupyterHubAuthenticator": "auth",
    "UsersAuthenticator": "auth",
    "UserLimitsMixin": "limits",
    "SwarmBackend": "backend",
    "SwarmClusterConfig": "config",
    "parse_memory": "options",
    "swarm_cluster_options": "options",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
