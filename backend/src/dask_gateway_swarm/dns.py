"""Name lookups that follow the swarm as services come and go.

aiohttp resolves names with aiodns (c-ares) whenever aiodns is installed,
as it is in the notebook image (JupyterHub needs it). c-ares caches its
answers: a "no such name" for a service looked up before its task ran (a
user's new notebook server, a new scheduler), and the old address of a
service whose container was replaced (a redeployed hub), up to the TTL of
Docker's DNS (600 s). The gateway then could not reach a redeployed hub,
nor the hub a user's new server, for minutes. The C library's resolver
(aiohttp's ThreadedResolver) asks Docker's DNS every time.
"""

import aiohttp.connector
import aiohttp.resolver
from aiohttp.resolver import ThreadedResolver

__all__ = ("use_system_resolver",)


def use_system_resolver():
    """Make getaddrinfo aiohttp's default resolver in this process (the
    gateway's and the hub's: each calls this when it loads this package)."""
    aiohttp.resolver.DefaultResolver = ThreadedResolver
    aiohttp.connector.DefaultResolver = ThreadedResolver
