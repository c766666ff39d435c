"""User-facing cluster options for the Swarm backend.

``swarm_cluster_options(...)`` builds an upstream ``Options`` object whose
handler turns the user's choices into ``SwarmClusterConfig`` overrides. Every
refusal is a ``ValueError`` whose message starts with the option's name; the
gateway returns it to the client at ``new_cluster``.

Example gateway configuration::

    from dask_gateway_swarm import swarm_cluster_options
    c.SwarmBackend.cluster_options = swarm_cluster_options(
        profiles={
            "small": {"worker_cores": 2, "worker_memory": "8 GiB"},
            "medium": {"worker_cores": 4, "worker_memory": "16 GiB"},
        },
        node_pools=["arm64", "x86"],
        max_worker_cores=4,
        max_worker_memory="16 GiB",
    )
"""

import re

from dask_gateway_server.options import Float, Mapping, Options, Select, String

__all__ = ("parse_memory", "swarm_cluster_options", "CUSTOM_PROFILE", "ANY_POOL", "PROFILE_KEYS")

CUSTOM_PROFILE = "custom"
ANY_POOL = "any"
# What a profile may set.
PROFILE_KEYS = ("worker_cores", "worker_cores_limit", "worker_memory", "worker_memory_limit")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "ki": 2**10,
    "kib": 2**10,
    "kb": 2**10,
    "m": 2**20,
    "mi": 2**20,
    "mib": 2**20,
    "mb": 2**20,
    "g": 2**30,
    "gi": 2**30,
    "gib": 2**30,
    "gb": 2**30,
    "t": 2**40,
    "ti": 2**40,
    "tib": 2**40,
    "tb": 2**40,
}
_MEMORY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables the backend sets itself; a user may not override them. Dask reads
# every variable starting with DASK_ as config with the rest lower-cased
# ("__" nests, "-" and "_" are the same), so names are compared ignoring case.
_RESERVED_ENV_PREFIXES = ("DASK_GATEWAY_", "DASK_DISTRIBUTED__COMM__")
# Config paths the gateway sets, as dask spells them. Also refused: a variable
# above one (DASK_DISTRIBUTED='{"comm": ...}' sets the whole section).
# The scheduler's preloads too: the gateway's own run first and report its
# addresses, and a user's would run before them.
_RESERVED_CONFIG_PATHS = (
    ("gateway",),
    ("distributed", "comm"),
    ("distributed", "scheduler", "preload"),
    ("distributed", "scheduler", "preload_argv"),
)
# After DASK_: serialized config of any kind (DASK_INTERNAL_INHERIT_CONFIG) and
# where dask reads config files from.
_RESERVED_ENV_NAMES = ("internal_inherit_config", "config", "root_config")

def parse_memory(value, name="memory"):
    """Parse ``value`` (bytes, or a string like "8 GiB", "512M") into bytes.

    Units are binary (G = GiB), as in dask-gateway-server's ``MemoryLimit``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a memory size")
    if isinstance(value, (int, float)):
        nbytes = int(value)
    elif isinstance(value, str):
        match = _MEMORY_RE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name}: {value!r} is not a memory size "
                "(expected a size such as '512 MiB' or '8 GiB')"
            )
        nbytes = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise ValueError(f"{name}: {value!r} is not a memory size")
    if nbytes <= 0:
        raise ValueError(f"{name}: must be positive, got {value!r}")
    return nbytes


class MemoryString(String):
    """A memory size as a string, or a number of GiB: the DaskHub chart's
    convention, which seed users type (``new_cluster(worker_memory=2)``)."""

    def validate(self, x):
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if not x > 0:
                raise ValueError(f"{self.field}: a number is GiB and must be positive, got {x!r}")
            return f"{x:g} GiB"
        return super().validate(x)


def is_reserved_env_name(name):
    """Whether dask (or dask-gateway) reads ``name`` as something the gateway sets."""
    if name.upper().startswith(_RESERVED_ENV_PREFIXES):
        return True
    if name[:5].upper() != "DASK_":
        return False
    rest = name[5:].lower().replace("-", "_")
    if rest in _RESERVED_ENV_NAMES:
        return True
    path = tuple(rest.split("__"))
    return any(
        path[: len(reserved)] == reserved or reserved[: len(path)] == path
        for reserved in _RESERVED_CONFIG_PATHS
    )

def _check_environment(environment):
    out = {}
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise ValueError(f"environment: {key!r} is not a valid variable name")
        if is_reserved_env_name(key):
            raise ValueError(f"environment: {key} is set by the gateway")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"environment: value of {key} must be a string")
        out[key] = str(value)
    return out


def resolve_worker_size(options, profiles, max_worker_cores=None, max_worker_memory=None):
    """Turn the user's profile/cores/memory choices into config values.

    Returns a dict with ``worker_cores``, ``worker_cores_limit``,
    ``worker_memory`` (bytes) and ``worker_memory_limit`` (bytes).
    """
    profile = options.get("profile", CUSTOM_PROFILE)
    if profile != CUSTOM_PROFILE:
        if profile not in profiles:
            raise ValueError(
                f"profile: unknown profile {profile!r} "
                f"(choose from {sorted(profiles) + [CUSTOM_PROFILE]})"
            )
        size = dict(options)
        size.update(profiles[profile])
    else:
        size = dict(options)

    cores = size.get("worker_cores", 1)
    if isinstance(cores, bool) or not isinstance(cores, (int, float)) or cores <= 0:
        raise ValueError(f"worker_cores: must be a positive number, got {cores!r}")
    cores_limit = size.get("worker_cores_limit") or cores
    if isinstance(cores_limit, bool) or not isinstance(cores_limit, (int, float)):
        raise ValueError(f"worker_cores_limit: must be a number, got {cores_limit!r}")
    if cores > cores_limit:
        raise ValueError(
            f"worker_cores: {cores:g} cores exceeds worker_cores_limit of {cores_limit:g}"
        )
    if max_worker_cores is not None and cores_limit > max_worker_cores:
        which = "worker_cores" if cores_limit == cores else "worker_cores_limit"
        raise ValueError(
            f"{which}: {cores_limit:g} cores exceeds the maximum of "
            f"{max_worker_cores:g} cores per worker"
        )

    memory = parse_memory(size.get("worker_memory", "2 GiB"), "worker_memory")
    memory_limit = size.get("worker_memory_limit")
    memory_limit = (
        parse_memory(memory_limit, "worker_memory_limit") if memory_limit else memory
    )
    if memory > memory_limit:
        raise ValueError("worker_memory: exceeds worker_memory_limit")
    if max_worker_memory is not None:
        max_bytes = parse_memory(max_worker_memory, "max_worker_memory")
        if memory_limit > max_bytes:
            raise ValueError(
                f"worker_memory: {size.get('worker_memory')!r} exceeds the maximum "
                f"of {max_worker_memory!r} per worker"
            )
    return {
        "worker_cores": float(cores),
        "worker_cores_limit": float(cores_limit),
        "worker_memory": memory,
        "worker_memory_limit": memory_limit,
    }


def swarm_cluster_options(
    profiles=None,
    default_profile=CUSTOM_PROFILE,
    node_pools=None,
    default_node_pool=ANY_POOL,
    image=None,
    allow_image=True,
    allow_environment=True,
    default_worker_cores=1.0,
    default_worker_memory="2 GiB",
    default_worker_cores_limit=0.0,
    max_worker_cores=None,
    max_worker_memory=None,
):
    """Build the ``Options`` exposed to users of a Swarm-backed gateway.

    Parameters
    ----------
    profiles : dict, optional
        Named worker sizes, e.g. ``{"small": {"worker_cores": 2,
        "worker_memory": "8 GiB"}}``. A profile's values override the
        individual fields; the ``custom`` profile uses the fields.
    node_pools : list of str, optional
        Values of ``SwarmBackend.node_pool_label`` a user may select workers
        by (e.g. ``["arm64", "x86"]``); ``any`` places workers on any worker node.
    image : str, optional
        Default worker/scheduler image; ``None`` keeps ``SwarmClusterConfig.image``.
    allow_image, allow_environment : bool
        Whether users may choose their image / set environment variables.
    default_worker_cores_limit : float
        Default CPU limit of a worker; 0 means equal to its cores.
    max_worker_cores, max_worker_memory : optional
        Upper bounds for a single worker's cores (limit) and memory.
    """
    profiles = dict(profiles or {})
    node_pools = list(node_pools or [])
    # Fail at gateway start, not at the first user request: a mistyped key
    # would otherwise be dropped, and a default above the maximum refuse
    # every new_cluster() that does not name a size.
    for name, size in profiles.items():
        unknown = sorted(set(size) - set(PROFILE_KEYS))
        if unknown:
            raise ValueError(
                f"profile {name}: unknown key(s) {', '.join(map(str, unknown))} "
                f"(expected {', '.join(PROFILE_KEYS)})"
            )
        resolve_worker_size({"profile": name}, profiles, max_worker_cores, max_worker_memory)
    resolve_worker_size(
        {
            "worker_cores": float(default_worker_cores),
            "worker_cores_limit": float(default_worker_cores_limit),
            "worker_memory": default_worker_memory,
        },
        {},
        max_worker_cores,
        max_worker_memory,
    )
    fields = [
        Select(
            "profile",
            [CUSTOM_PROFILE] + sorted(profiles),
            default=default_profile,
            label="Worker size profile",
        ),
        Float(
            "worker_cores",
            default=float(default_worker_cores),
            min=0.01,
            max=max_worker_cores,
            label="Worker cores (reserved)",
        ),
        Float(
            "worker_cores_limit",
            default=float(default_worker_cores_limit),
            min=0.0,
            max=max_worker_cores,
            label="Worker cores limit (0: same as worker cores)",
        ),
        MemoryString("worker_memory", default=str(default_worker_memory), label="Worker memory (a number: GiB)"),
    ]
    if node_pools:
        fields.append(
            Select(
                "node_pool",
                [ANY_POOL] + node_pools,
                default=default_node_pool,
                label="Worker node pool",
            )
        )
    if allow_image:
        fields.append(String("image", default=image or "", label="Image"))
    if allow_environment:
        fields.append(Mapping("environment", default={}, label="Environment variables"))

    def handler(options, user):
        out = resolve_worker_size(
            options, profiles, max_worker_cores=max_worker_cores,
            max_worker_memory=max_worker_memory,
        )
        pool = options.get("node_pool", ANY_POOL)
        out["node_pool"] = "" if pool == ANY_POOL else pool
        chosen_image = options.get("image") or image
        if chosen_image:
            if not isinstance(chosen_image, str) or any(c.isspace() for c in chosen_image):
                raise ValueError(f"image: {chosen_image!r} is not an image reference")
            out["image"] = chosen_image
        if options.get("environment"):
            out["environment"] = _check_environment(options["environment"])
        return out

    return Options(*fields, handler=handler)
