# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Client side of a Dask Gateway check, shared by this collection's modules.

The check runs the stock ``dask_gateway`` client in *asynchronous* mode on an
event loop owned by the caller. That avoids the background loop thread of the
synchronous client, whose ``Gateway.__del__`` can deadlock when the cycle
collector frees an object while that thread is busy. Every blocking call is
wrapped in ``asyncio.wait_for`` and every client, cluster and gateway object is
closed explicitly.

Everything that decides (version comparison, worker placement, messages,
redaction) is a plain function so that unit tests need no gateway.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import traceback
from urllib.parse import quote, urlsplit

DASK_GATEWAY_IMPORT_ERROR = None
try:
    from dask_gateway import BasicAuth, Gateway
except ImportError:  # pragma: no cover - reported through missing_required_lib
    BasicAuth = Gateway = None
    DASK_GATEWAY_IMPORT_ERROR = traceback.format_exc()

AIOHTTP_IMPORT_ERROR = None
try:
    import aiohttp
except ImportError:  # pragma: no cover - dask_gateway depends on aiohttp
    aiohttp = None
    AIOHTTP_IMPORT_ERROR = traceback.format_exc()

HAS_DASK_GATEWAY = DASK_GATEWAY_IMPORT_ERROR is None and AIOHTTP_IMPORT_ERROR is None

#: The steps of a full check, in the order they run.
STEPS = (
    "connect",
    "options",
    "create",
    "scale",
    "compute",
    "versions",
    "placement",
    "dashboard",
    "shutdown",
)

#: Packages whose versions must agree between client, scheduler and workers.
DEFAULT_VERSION_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado")

#: What the versions step tells the user to do about a difference.
VERSIONS_FIX = (
    "The client must run the image's versions: install it from the collection's client/requirements.txt "
    "(pip install -r client/requirements.txt, on the image's Python major.minor). If the image is the stale "
    "side, run `make lock` in the collection's checkout and rerun site.yml, which builds and distributes "
    "the image from the new lock"
)

#: Environment variables a worker may carry that name the node it runs on.
DEFAULT_NODE_ENV_VARS = ("DASK_SWARM_NODE_ID", "SWARM_NODE_ID")

#: How many tasks the computation step submits.
COMPUTE_TASKS = 200

MASK = "********"


class StepFailed(Exception):
    """A check step failed; ``str()`` names the step."""

    def __init__(self, step, message):
        super().__init__(step, message)
        self.step = step
        self.message = message

    def __str__(self):
        return "step %s: %s" % (self.step, self.message)


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def secret_variants(username, password):
    """Return every form in which ``password`` could leak into a message."""
    if not password:
        return []
    variants = {password, quote(password, safe=""), quote(password)}
    if username is not None:
        for encoding in ("latin1", "utf-8"):
            try:
                pair = ("%s:%s" % (username, password)).encode(encoding)
            except UnicodeEncodeError:
                continue
            variants.add(base64.b64encode(pair).decode("ascii"))
    return sorted((v for v in variants if v), key=len, reverse=True)


def redact(value, secrets):
    """Replace every secret in ``value`` (str, or nested list/dict of str)."""
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return dict((redact(k, secrets), redact(v, secrets)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def describe_exception(exc):
    """One line for an exception: its type and message, never a traceback."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    if len(text) > 500:
        text = text[:497] + "..."
    return "%s: %s" % (name, text)


def format_seconds(seconds):
    """``120`` -> ``'120'``, ``2.5`` -> ``'2.5'``."""
    return ("%.1f" % seconds).rstrip("0").rstrip(".")


def scale_timeout_message(have, want, seconds):
    """The message of a scale step that ran out of time."""
    return "%d of %d workers after %s s" % (have, want, format_seconds(seconds))


def normalise_version(package, version):
    """Compare Python by major.minor only; patch releases speak the same protocol."""
    if version is None:
        return None
    version = str(version)
    if package == "python":
        return ".".join(version.split(".")[:2])
    return version


def compare_versions(versions, packages=DEFAULT_VERSION_PACKAGES):
    """Compare the output of ``Client.get_versions(check=False)``.

    Returns ``(summary, mismatches)``: ``summary`` maps each package to the
    versions of the client, the scheduler and the (distinct) workers;
    ``mismatches`` lists one message per package whose versions differ.
    """
    client = (versions.get("client") or {}).get("packages") or {}
    scheduler = (versions.get("scheduler") or {}).get("packages") or {}
    workers = versions.get("workers") or {}
    summary = {}
    mismatches = []
    for package in packages:
        seen = {}
        seen.setdefault(normalise_version(package, client.get(package)), []).append("client")
        seen.setdefault(normalise_version(package, scheduler.get(package)), []).append("scheduler")
        worker_versions = set()
        for address in sorted(workers):
            info = (workers[address] or {}).get("packages") or {}
            worker_versions.add(info.get(package))
            seen.setdefault(normalise_version(package, info.get(package)), []).append("worker %s" % address)
        summary[package] = {
            "client": client.get(package),
            "scheduler": scheduler.get(package),
            "workers": sorted(str(v) for v in worker_versions),
        }
        if len(seen) > 1:
            parts = []
            for version in sorted(seen, key=str):
                where = seen[version]
                shown = where if len(where) <= 3 else where[:3] + ["%d more" % (len(where) - 3)]
                parts.append("%s on %s" % (version, ", ".join(shown)))
            mismatches.append("%s differs: %s" % (package, "; ".join(parts)))
    return summary, mismatches


def make_node_probe(env_vars):
    """Return a function for ``Client.run`` that says where a worker runs.

    The function is built here, as a closure, so that cloudpickle ships it to
    the workers by value: they cannot import this collection.
    """
    names = list(env_vars)

    def dask_swarm_node_probe():
        import os
        import socket

        found = None
        for name in names:
            if os.environ.get(name):
                found = name
                break
        return {
            "hostname": socket.gethostname(),
            "node": os.environ[found] if found else socket.gethostname(),
            "node_source": found or "hostname",
        }

    return dask_swarm_node_probe


def summarize_placement(run_result):
    """Turn ``{worker address: probe result}`` into the placement report."""
    workers = []
    nodes = {}
    for address in sorted(run_result):
        info = run_result[address] or {}
        node = info.get("node") or info.get("hostname") or "unknown"
        workers.append(
            {
                "address": address,
                "hostname": info.get("hostname"),
                "node": node,
                "node_source": info.get("node_source", "hostname"),
            }
        )
        nodes[node] = nodes.get(node, 0) + 1
    return {"workers": workers, "nodes": nodes, "distinct_nodes": len(nodes)}


def placement_problem(placement, min_distinct_nodes=None, expect_worker_nodes=None):
    """Return why the placement does not meet the expectation, or ``None``."""
    nodes = placement["nodes"]
    shown = ", ".join("%s (%d)" % (n, c) for n, c in sorted(nodes.items())) or "none"
    if min_distinct_nodes and placement["distinct_nodes"] < min_distinct_nodes:
        return "workers ran on %d distinct node%s [%s], at least %d expected" % (
            placement["distinct_nodes"],
            "" if placement["distinct_nodes"] == 1 else "s",
            shown,
            min_distinct_nodes,
        )
    if expect_worker_nodes:
        names = set(nodes)
        names.update(w["hostname"] for w in placement["workers"] if w.get("hostname"))
        missing = [n for n in expect_worker_nodes if n not in names]
        if missing:
            return "no worker ran on %s; workers ran on [%s]" % (", ".join(missing), shown)
    return None


def build_cluster_options(options, requested):
    """Set ``requested`` on the gateway's ``Options`` (a mutable mapping).

    Unknown names and values the gateway's options reject raise
    ``ValueError`` naming the option and what the gateway offers.
    """
    requested = requested or {}
    known = list(options)
    unknown = sorted(k for k in requested if k not in known)
    if unknown:
        raise ValueError(
            "the gateway offers no option %s (it offers: %s)"
            % (", ".join(unknown), ", ".join(sorted(known)) or "none")
        )
    for key in sorted(requested):
        try:
            options[key] = requested[key]
        except Exception as exc:
            raise ValueError("option %s=%r rejected: %s" % (key, requested[key], describe_exception(exc)))
    return options


def same_origin(url, other):
    """True when both URLs share scheme, host and port."""
    a, b = urlsplit(url), urlsplit(other)

    def port(parts):
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)

    return (a.scheme, a.hostname, port(a)) == (b.scheme, b.hostname, port(b))


def basic_auth_header(username, password):
    """The header ``dask_gateway.BasicAuth`` sends (user and password in latin-1)."""
    text = "%s:%s" % (username or "", password or "")
    try:
        pair = text.encode("latin1")
    except UnicodeEncodeError:
        pair = text.encode("utf-8")
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def dashboard_headers(link, dashboard_auth):
    """Headers for fetching ``link``: the credentials only for the gateway's own origins.

    ``dashboard_auth`` is ``None`` or ``{"origins": [url, ...], "headers": {...}}``.
    """
    if not dashboard_auth:
        return {}
    if any(same_origin(link, origin) for origin in dashboard_auth.get("origins") or []):
        return dict(dashboard_auth.get("headers") or {})
    return {}


def make_ssl_context(address, validate_certs=True, ca_path=None):
    """The ``ssl`` argument for aiohttp: ``None`` (default), ``False`` or a context."""
    if urlsplit(address).scheme != "https":
        return None
    if not validate_certs:
        return False
    if ca_path:
        return ssl.create_default_context(cafile=ca_path)
    return None


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------


class StepClock:
    """Records how long each step took and whether it passed."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.steps = []

    def start(self, name):
        entry = {"name": name, "seconds": None, "ok": False}
        self.steps.append(entry)
        return entry, self.clock()

    def finish(self, entry, started, ok):
        entry["seconds"] = round(self.clock() - started, 3)
        entry["ok"] = ok

    @property
    def timings(self):
        return dict((s["name"], s["seconds"]) for s in self.steps)


async def _await(awaitable):
    return await awaitable


class GatewayCheck:
    """One connect / create / scale / compute / shutdown cycle.

    ``gateway_factory`` returns an asynchronous ``dask_gateway.Gateway``;
    tests pass a fake. ``run()`` never raises for a failed step: it returns
    the result dict with ``failed_step`` and ``msg`` set.
    """

    def __init__(
        self,
        gateway_factory,
        workers=2,
        timeout=120,
        cluster_options=None,
        min_distinct_nodes=None,
        expect_worker_nodes=None,
        node_env_vars=DEFAULT_NODE_ENV_VARS,
        check_versions=True,
        version_packages=DEFAULT_VERSION_PACKAGES,
        check_dashboard=True,
        dashboard_auth=None,
        ssl_context=None,
        check_mode=False,
        poll_interval=0.5,
        clock=time.monotonic,
    ):
        self.gateway_factory = gateway_factory
        self.workers = workers
        self.timeout = timeout
        self.cluster_options = cluster_options or {}
        self.min_distinct_nodes = min_distinct_nodes
        self.expect_worker_nodes = expect_worker_nodes or []
        self.node_env_vars = list(node_env_vars)
        self.check_versions = check_versions
        self.version_packages = list(version_packages)
        self.check_dashboard = check_dashboard
        self.dashboard_auth = dashboard_auth
        self.ssl_context = ssl_context
        self.check_mode = check_mode
        self.poll_interval = poll_interval
        self.clock = clock

        self.steps = StepClock(clock)
        self.result = {}
        self.gateway = None
        self.cluster = None
        self.client = None
        self.cluster_name = None
        self.cluster_gone = False

    # -- plumbing ---------------------------------------------------------

    async def _step(self, name, func, polls=False):
        # Steps that poll keep their own deadline of ``timeout`` and say how far
        # they got; the outer limit only catches a call that never returns.
        limit = self.timeout + 10 + 2 * self.poll_interval if polls else self.timeout
        entry, started = self.steps.start(name)
        ok = False
        try:
            value = await asyncio.wait_for(func(), limit)
            ok = True
            return value
        except StepFailed:
            raise
        except asyncio.TimeoutError:
            raise StepFailed(name, "no answer after %s s" % format_seconds(limit))
        except Exception as exc:
            raise StepFailed(name, describe_exception(exc))
        finally:
            self.steps.finish(entry, started, ok)

    def _apply_ssl(self, gateway):
        # The client has no public TLS option for its HTTP API calls; it passes
        # _request_kwargs to every aiohttp request.
        if self.ssl_context is not None and hasattr(gateway, "_request_kwargs"):
            gateway._request_kwargs["ssl"] = self.ssl_context

    # -- steps ------------------------------------------------------------

    async def _connect(self):
        try:
            clusters = await self.gateway.list_clusters()
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status in (401, 403):
                url = getattr(getattr(exc, "request_info", None), "real_url", None) or "the gateway"
                reason = getattr(exc, "message", None) or ""
                raise StepFailed(
                    "connect", "the gateway refused the credentials (HTTP %s %s from %s)" % (status, reason, url)
                )
            raise
        self.result["clusters"] = [
            {"name": c.name, "status": getattr(c.status, "name", str(c.status))} for c in clusters
        ]

    async def _options(self):
        options = await self.gateway.cluster_options()
        build_cluster_options(options, self.cluster_options)
        self.result["cluster_options"] = dict(options)
        return options

    async def _create(self, options):
        self.cluster_name = await self.gateway.submit(cluster_options=options)
        self.result["cluster_name"] = self.cluster_name
        cluster = self.gateway.connect(self.cluster_name, shutdown_on_close=False)
        self._apply_ssl(getattr(cluster, "gateway", None))
        self.cluster = cluster
        await _await(cluster)
        self.result["dashboard_link"] = cluster.dashboard_link
        client = cluster.get_client(set_as_default=False)
        self.client = client
        await _await(client)

    async def _count_workers(self):
        return len(await self.client.scheduler.ncores())

    async def _scale(self):
        await self.gateway.scale_cluster(self.cluster_name, self.workers)
        deadline = self.clock() + self.timeout
        have = 0
        while True:
            have = await self._count_workers()
            if have >= self.workers:
                self.result["worker_count"] = have
                return
            if self.clock() >= deadline:
                raise StepFailed("scale", scale_timeout_message(have, self.workers, self.timeout))
            await asyncio.sleep(self.poll_interval)

    async def _compute(self):
        n = COMPUTE_TASKS
        squares = self.client.map(pow, range(n), [2] * n, pure=False)
        total = self.client.submit(sum, squares, pure=False)
        value = await self.client.gather(total)
        expected = sum(i * i for i in range(n))
        self.result["computation"] = {"tasks": n + 1, "result": value, "expected": expected}
        if value != expected:
            raise StepFailed("compute", "sum of %d squares is %r, expected %r" % (n, value, expected))

    async def _versions(self):
        versions = await self.client.get_versions(check=False)
        summary, mismatches = compare_versions(versions, self.version_packages)
        self.result["versions"] = summary
        if mismatches and self.check_versions:
            raise StepFailed("versions", "%s. %s" % ("; ".join(mismatches), VERSIONS_FIX))
        if mismatches:
            self.result["version_mismatches"] = mismatches

    async def _placement(self):
        probe = make_node_probe(self.node_env_vars)
        placement = summarize_placement(await self.client.run(probe))
        self.result.update(placement)
        problem = placement_problem(placement, self.min_distinct_nodes, self.expect_worker_nodes)
        if problem:
            raise StepFailed("placement", problem)

    async def _dashboard(self):
        link = self.result.get("dashboard_link")
        if not link:
            raise StepFailed("dashboard", "the gateway reports no dashboard link for %s" % self.cluster_name)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        kwargs = {}
        if self.ssl_context is not None and urlsplit(link).scheme == "https":
            kwargs["ssl"] = self.ssl_context
        headers = dashboard_headers(link, self.dashboard_auth)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(link, headers=headers, **kwargs) as resp:
                self.result["dashboard_status"] = resp.status
                if resp.status != 200:
                    raise StepFailed("dashboard", "HTTP %d from %s" % (resp.status, link))

    async def _close_cluster_objects(self):
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.close(shutdown=False)

    async def _shutdown(self):
        await self._close_cluster_objects()
        await self.gateway.stop_cluster(self.cluster_name)
        deadline = self.clock() + self.timeout
        while True:
            listed = dict((c.name, c) for c in await self.gateway.list_clusters())
            if self.cluster_name not in listed:
                self.cluster_gone = True
                return
            if self.clock() >= deadline:
                status = getattr(listed[self.cluster_name].status, "name", "?")
                raise StepFailed(
                    "shutdown",
                    "cluster %s still listed (%s) after %s s" % (self.cluster_name, status, format_seconds(self.timeout)),
                )
            await asyncio.sleep(self.poll_interval)

    # -- cleanup ----------------------------------------------------------

    async def _quietly(self, awaitable_factory):
        try:
            await asyncio.wait_for(awaitable_factory(), self.timeout)
            return None
        except asyncio.TimeoutError:
            return "no answer after %s s" % format_seconds(self.timeout)
        except Exception as exc:
            return describe_exception(exc)

    async def _cleanup(self):
        cleanup = {"cluster": self.cluster_name, "stopped": None, "error": None}
        await self._quietly(self._close_cluster_objects)
        if self.cluster_name is not None and not self.cluster_gone:
            error = await self._quietly(lambda: self.gateway.stop_cluster(self.cluster_name))
            cleanup["stopped"] = error is None
            cleanup["error"] = error
        elif self.cluster_name is not None:
            cleanup["stopped"] = True
        if self.gateway is not None:
            await self._quietly(self.gateway.close)
        return cleanup

    # -- entry point ------------------------------------------------------

    async def run(self):
        started = self.clock()
        failure = None
        try:
            self.gateway = self.gateway_factory()
            self._apply_ssl(self.gateway)
            await self._step("connect", self._connect)
            if not self.check_mode:
                options = await self._step("options", self._options)
                await self._step("create", lambda: self._create(options))
                await self._step("scale", self._scale, polls=True)
                await self._step("compute", self._compute)
                await self._step("versions", self._versions)
                await self._step("placement", self._placement)
                if self.check_dashboard:
                    await self._step("dashboard", self._dashboard)
                await self._step("shutdown", self._shutdown, polls=True)
        except StepFailed as exc:
            failure = exc
        except Exception as exc:  # a bug or an import problem, not a step
            failure = StepFailed("setup", describe_exception(exc))
        finally:
            cleanup = await self._cleanup()
        if cleanup["cluster"] is not None:
            self.result["cleanup"] = cleanup
        if failure is None and cleanup["stopped"] is False:
            failure = StepFailed(
                "cleanup", "cluster %s may still be running: %s" % (cleanup["cluster"], cleanup["error"])
            )
        self.result["steps"] = self.steps.steps
        self.result["timings"] = self.steps.timings
        self.result["total_seconds"] = round(self.clock() - started, 3)
        if failure is not None:
            self.result["failed_step"] = failure.step
            self.result["msg"] = str(failure)
            if cleanup.get("stopped") is False and failure.step != "cleanup":
                self.result["msg"] += "; cleanup: cluster %s may still be running: %s" % (
                    cleanup["cluster"],
                    cleanup["error"],
                )
        return self.result


def run_check(check, teardown_timeout=10):
    """Run ``check.run()`` on a fresh event loop and close the loop."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(check.run())
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=teardown_timeout))
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), teardown_timeout))
        except Exception:
            pass
        asyncio.set_event_loop(None)
        loop.close()


def make_gateway_factory(address, username=None, password=None, proxy_address=None, public_address=None):
    """Return a factory for an asynchronous ``Gateway`` (called inside the loop)."""

    def factory():
        auth = BasicAuth(username, password) if password is not None else None
        return Gateway(
            address,
            proxy_address=proxy_address,
            public_address=public_address,
            auth=auth,
            asynchronous=True,
        )

    return factory
