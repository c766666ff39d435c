"""JupyterHub's side of a fleet with notebooks (the jupyterhub role).

- :class:`AccountsAuthenticator`: users log in to the hub with the accounts
  of the gateway (``gateway_users``): the same users file of bcrypt hashes,
  the same generated passwords.
- :class:`NotebookSpawner`: dockerspawner's SwarmSpawner, but the server's
  hub token travels as a Swarm secret, not in the service's environment,
  where ``docker service inspect`` would show it.
- :func:`stop_clusters_after`: a ``Spawner.post_stop_hook`` that stops a
  user's Dask clusters when the user's notebook server has stayed stopped
  for a grace period (dask-gateway#451).

Example hub configuration::

    from dask_gateway_swarm.hub import stop_clusters_after

    c.JupyterHub.authenticator_class = "dask_gateway_swarm.hub.AccountsAuthenticator"
    c.AccountsAuthenticator.users_file = "/run/secrets/jupyterhub-users"
    c.JupyterHub.spawner_class = "dask_gateway_swarm.hub.NotebookSpawner"
    c.Spawner.post_stop_hook = stop_clusters_after(
        "http://dask-gateway_gateway:8081", grace=300, service="dask-gateway"
    )

This module runs in the hub only: it imports jupyterhub, which the notebook
image has (image/notebook-requirements.txt) and the plain Dask image has not.
"""

import asyncio
import json
import secrets
from urllib.parse import quote

from docker.types import SecretReference
from dockerspawner import SwarmSpawner
from jupyterhub import orm
from jupyterhub.auth import Authenticator
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Unicode

from .auth import PasswordBook
from .dns import use_system_resolver
from .limits import OWN_CLUSTERS_PATH

__all__ = ("AccountsAuthenticator", "NotebookSpawner", "stop_clusters_after")

# The hub looks up users' new servers by their service names (dns.py).
use_system_resolver()

#: Where a notebook server finds its hub token (dask_gateway_swarm.singleuser reads it).
TOKEN_SECRET_TARGET = "jupyterhub-api-token"
#: Marks the Swarm secret that carries a notebook service's token.
TOKEN_SECRET_LABEL = "dask_swarm.gateway.notebook-token"


class AccountsAuthenticator(Authenticator):
    """Password logins against a users file of salted bcrypt hashes
    (``{"alice": "$2b$12$...", ...}``, see :func:`dask_gateway_swarm.auth.load_users_file`).

    Everyone with an account may log in; the hub's own ``admin_users`` are
    its admins. Users made through the hub's API (no account) have no
    password and log in with API tokens only.
    """

    users_file = Unicode(
        help="Path of the JSON object mapping each user name to a bcrypt hash of its password.",
        config=True,
    )

    _book = None

    @property
    def book(self):
        # Read at the first login, not at import: the file is a Swarm secret.
        if self._book is None:
            self._book = PasswordBook(self.users_file)
            self.log.info("Loaded %d accounts from %s", len(self._book.users), self.users_file)
        return self._book

    def check_allowed(self, username, authentication=None):
        return username in self.book.users or super().check_allowed(username, authentication)

    async def authenticate(self, handler, data):
        name = (data or {}).get("username", "")
        password = (data or {}).get("password", "").encode("utf-8")
        if name and await self.book.check(name, password):
            return name
        self.log.info("Failed login for user %r", name)
        return None


class NotebookSpawner(SwarmSpawner):
    """A user's notebook server as a Swarm service whose hub token is a Swarm
    secret of its own (removed with the service), read at start by
    ``python -m dask_gateway_swarm.singleuser``; the service's spec then
    holds no token.
    """

    def get_env(self):
        env = super().get_env()
        # It comes as a Swarm secret instead (create_object); JPY_API_TOKEN is its older name.
        env.pop("JUPYTERHUB_API_TOKEN", None)
        env.pop("JPY_API_TOKEN", None)
        return env

    async def get_command(self):
        return ["python", "-m", "dask_gateway_swarm.singleuser", *(await super().get_command())]

    async def create_object(self):
        await self.remove_token_secrets()
        name = f"{self.service_name}-token-{secrets.token_hex(4)}"
        created = await self.docker(
            "create_secret",
            name=name,
            data=self.api_token.encode(),
            labels={TOKEN_SECRET_LABEL: self.service_name, **self.extra_create_kwargs.get("labels", {})},
        )
        # Readable by the container's user only ("uid:gid", numeric, as configured).
        uid, _, gid = str(self.extra_container_spec.get("user", "0")).partition(":")
        reference = SecretReference(
            created["ID"], name, filename=TOKEN_SECRET_TARGET, uid=uid, gid=gid or uid, mode=0o400
        )
        self.extra_container_spec = {**self.extra_container_spec, "secrets": [reference]}
        self.log.info("Gave %s its hub token as Swarm secret %s", self.service_name, name)
        return await super().create_object()

    async def remove_object(self):
        await super().remove_object()
        await self.remove_token_secrets()

    async def remove_token_secrets(self):
        for found in await self.docker("secrets", filters={"label": f"{TOKEN_SECRET_LABEL}={self.service_name}"}):
            self.log.info("Removing %s's token secret %s", self.service_name, found["Spec"]["Name"])
            await self.docker("remove_secret", found["ID"])


class _ClusterStopper:
    """What :func:`stop_clusters_after` returns: the hook, and each user's pending clean-up."""

    def __init__(self, gateway_api_url, grace, service):
        self.gateway_api_url = gateway_api_url.rstrip("/")
        self.grace = grace
        self.service = service
        self.pending = {}

    def __call__(self, spawner):
        name = spawner.user.name
        old = self.pending.pop(name, None)
        if old is not None:
            old.cancel()
        # The spawner's log is the hub's: a module logger's INFO lines would not show.
        spawner.log.info("%s's server stopped: their Dask clusters stop in %s s unless it starts again", name, self.grace)
        task = asyncio.ensure_future(self.stop_later(spawner))
        self.pending[name] = task
        task.add_done_callback(lambda t: self.pending.pop(name, None) if self.pending.get(name) is t else None)

    async def stop_later(self, spawner):
        await asyncio.sleep(self.grace)
        name = spawner.user.name
        if spawner.active:
            spawner.log.info("%s's server started again within the grace period: their clusters keep running", name)
            return
        try:
            stopped = await self.stop_clusters(spawner.user)
        except Exception:
            spawner.log.exception("Could not stop the Dask clusters of %s", name)
            return
        spawner.log.info("Stopped %d Dask cluster(s) of %s: %s", len(stopped), name, ", ".join(stopped) or "none running")

    async def stop_clusters(self, user):
        """Stop every cluster of ``user`` through the gateway's API, with a
        short-lived token of that user's that only reaches the gateway."""
        token = user.new_api_token(
            note="dask_swarm.gateway: stop this user's Dask clusters",
            expires_in=300,
            scopes=[f"access:services!service={self.service}"],
        )
        try:
            client = AsyncHTTPClient()
            headers = {"Authorization": f"jupyterhub {token}"}
            # Her own clusters: an admin's list holds everyone's.
            resp = await client.fetch(
                HTTPRequest(f"{self.gateway_api_url}{OWN_CLUSTERS_PATH}", headers=headers, request_timeout=30)
            )
            names = sorted(json.loads(resp.body))
            for cluster in names:
                await client.fetch(
                    HTTPRequest(
                        f"{self.gateway_api_url}/api/v1/clusters/{quote(cluster)}",
                        method="DELETE",
                        headers=headers,
                        request_timeout=30,
                    )
                )
            return names
        finally:
            found = orm.APIToken.find(user.db, token)
            if found is not None:
                user.db.delete(found)
                user.db.commit()


def stop_clusters_after(gateway_api_url, grace, service="dask-gateway"):
    """A ``Spawner.post_stop_hook``: ``grace`` seconds after a user's server
    stops, unless it has started again, stop that user's Dask clusters.

    ``gateway_api_url`` is where the hub reaches the gateway's API (its
    private listener on the shared network); ``service`` is the gateway's
    name among the hub's services, the scope the clean-up token gets.
    A pending clean-up is lost when the hub restarts; the gateway's own
    idle timeout still stops such clusters.
    """
    return _ClusterStopper(gateway_api_url, float(grace), service)
