"""Accounts for the gateway: HTTP Basic auth against bcrypt hashes, and admins;
JupyterHub API tokens, with the hub's admins as the gateway's.

Example gateway configuration::

    ADMINS = {"alice"}
    c.DaskGateway.authenticator_class = "dask_gateway_swarm.auth.UsersAuthenticator"
    c.UsersAuthenticator.users_file = "/run/secrets/gateway-users"
    c.UsersAuthenticator.admin_users = ADMINS
    c.SwarmBackend.admin_users = ADMINS      # admins list every user's clusters

The users file is a JSON object mapping each user name to a salted bcrypt
hash of its password (``bcrypt.hashpw(password, bcrypt.gensalt())``)::

    {"alice": "$2b$12$...", "bob": "$2b$12$..."}

The gateway only ever holds the hashes.
"""

import asyncio
import base64
import binascii
import json

import bcrypt
from aiohttp import web
from traitlets import Set, Unicode

from dask_gateway_server import auth as upstream
from dask_gateway_server.auth import Authenticator, unauthorized
from dask_gateway_server.models import User

__all__ = ("GatewayUser", "JupyterHubAuthenticator", "PasswordBook", "UsersAuthenticator", "load_users_file")

# bcrypt ignores (bcrypt >= 5: refuses) bytes beyond 72; refuse them ourselves
# so a long password never matches by its prefix.
_MAX_PASSWORD_BYTES = 72
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


class GatewayUser(User):
    """A user who may act on its own clusters, and an admin on every cluster."""

    def has_permissions(self, cluster):
        return self.admin or super().has_permissions(cluster)


def load_users_file(path):
    """Read ``{"user": "<bcrypt hash>", ...}`` from ``path``.

    Errors name the file and the user, never a hash.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as exc:
            raise ValueError(
                f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})"
            ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of user name to bcrypt hash")
    users = {}
    for name, hashed in data.items():
        if not name or ":" in name:
            raise ValueError(f"{path}: invalid user name {name!r}")
        if (
            not isinstance(hashed, str)
            or not hashed.startswith(_BCRYPT_PREFIXES)
            or len(hashed) != 60
        ):
            raise ValueError(f"{path}: the entry of user {name!r} is not a bcrypt hash")
        users[name] = hashed.encode("ascii")
    return users


def _bcrypt_cost(hashed):
    return int(hashed.split(b"$")[2])


class PasswordBook:
    """The accounts of a users file (:func:`load_users_file`) and the check
    of a password against them; shared by the gateway's and the hub's logins.
    """

    def __init__(self, path):
        self.users = load_users_file(path)
        # Unknown users are checked against this hash, at the cost of the
        # real ones, so a user name cannot be probed by the response time.
        cost = max((_bcrypt_cost(h) for h in self.users.values()), default=12)
        self.dummy_hash = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))

    async def check(self, name, password):
        """Whether ``password`` (bytes) is ``name``'s."""
        hashed = self.users.get(name)
        known = hashed is not None
        if len(password) > _MAX_PASSWORD_BYTES:
            password, known = password[:_MAX_PASSWORD_BYTES], False
        # bcrypt takes ~0.2 s: off the event loop, or heartbeats stall.
        ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or self.dummy_hash)
        return ok and known


class UsersAuthenticator(Authenticator):
    """HTTP Basic authentication against salted bcrypt hashes.

    Every user has its own password; the gateway holds only their hashes (the
    ``users_file``). A wrong password, an unknown user or a missing or
    malformed header is answered with 401 and a Basic challenge. The user is
    cached by cookie (``cache_max_age``), so bcrypt's cost is paid about once
    per client session.
    """

    users_file = Unicode(
        "/run/secrets/gateway-users",
        help="""
        Path of a JSON object mapping each user name to the bcrypt hash of
        its password, e.g. ``{"alice": "$2b$12$..."}``. Read once at startup.
        """,
        config=True,
    )

    admin_users = Set(
        Unicode(),
        help="""
        Users who may see, connect to, scale and stop every user's clusters.

        Set ``admin_users`` of the backend to the same names, so admins also
        list every user's clusters.
        """,
        config=True,
    )

    async def setup(self, app):
        self.book = PasswordBook(self.users_file)
        self.users = self.book.users
        unknown_admins = sorted(self.admin_users - set(self.users))
        if unknown_admins:
            self.log.warning(
                "Admin users without an account: %s", ", ".join(unknown_admins)
            )
        self.log.info(
            "Loaded %d users (%d admins) from %s",
            len(self.users),
            len(self.admin_users & set(self.users)),
            self.users_file,
        )

    @staticmethod
    def parse_basic_auth(header):
        """``(user, password bytes)`` from a Basic ``Authorization`` header, or None."""
        auth_type, _, auth_key = (header or "").partition(" ")
        if auth_type != "Basic":
            return None
        try:
            raw = base64.b64decode(auth_key.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        name, sep, password = raw.partition(b":")
        if not sep or not name:
            return None
        try:
            return name.decode("utf-8"), password
        except UnicodeDecodeError:
            # The stock client encodes latin-1
            return name.decode("latin-1"), password

    async def authenticate(self, request):
        creds = self.parse_basic_auth(request.headers.get("Authorization"))
        if creds is None:
            raise unauthorized("Basic")
        name, password = creds
        if not await self.book.check(name, password):
            self.log.info("Failed login for user %r", name)
            raise unauthorized("Basic")
        return GatewayUser(name, admin=name in self.admin_users)


class JupyterHubAuthenticator(upstream.JupyterHubAuthenticator):
    """Upstream's JupyterHub token check, with two fixes for this gateway.

    - A token the hub does not know is a failed login (401). JupyterHub 5 and
      later answer 403 for it, where older hubs said 404, and upstream turns
      403 into a 500 "Permission failure".
    - The hub's admins are the gateway's: they act on every cluster
      (:class:`GatewayUser`) and list every cluster (the backend's
      ``admin_users``, kept as they log in). Upstream's ``admin`` flag is
      not enough: the stock routes list clusters by user name only.

    Configured as upstream's (``c.JupyterHubAuthenticator.*``).
    """

    async def setup(self, app):
        await super().setup(app)
        # app is the private API's aiohttp application; the backend is one of its keys.
        self.backend_admins = app["backend"].admin_users

    async def authenticate(self, request):
        try:
            user = await super().authenticate(request)
        except web.HTTPInternalServerError as exc:
            if exc.reason != "Permission failure verifying user's JupyterHub API token":
                raise
            self.log.info("JupyterHub refused a token (403)")
            raise unauthorized("jupyterhub") from None
        if user.admin:
            self.backend_admins.add(user.name)
        else:
            self.backend_admins.discard(user.name)
        return GatewayUser(user.name, groups=user.groups, admin=user.admin)
