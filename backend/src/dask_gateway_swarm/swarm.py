"""The Docker Engine calls of the Swarm backend, made without blocking the gateway.

``docker.APIClient`` is synchronous, so each call runs in a small thread pool
and is timed for the gateway's metrics. The methods here know Swarm, not Dask:
which service or secret belongs to which cluster is the backend's business.
"""

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

import docker
from docker.errors import APIError, NotFound

__all__ = ("SwarmClient",)


class SwarmClient:
    """Asynchronous access to one Swarm manager's engine.

    ``observe(method, seconds)`` is called after every call, failed or not.
    """

    def __init__(self, url, timeout, threads, observe, log=None, api=None):
        self.api = api or docker.APIClient(base_url=url, version="auto", timeout=timeout)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="swarm-backend")
        self.observe = observe
        self.log = log or logging.getLogger(__name__)

    async def call(self, method, *args, **kwargs):
        """Run one ``docker.APIClient`` method in the thread pool."""
        func = functools.partial(getattr(self.api, method), *args, **kwargs)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await loop.run_in_executor(self.executor, func)
        finally:
            self.observe(method, loop.time() - started)

    def close(self):
        self.api.close()
        self.executor.shutdown(wait=False)

    # Secrets

    async def create_secret(self, name, data, labels):
        """The new secret's ID; an existing one of that name is reused.

        It exists when an earlier attempt to start the same object created it.
        """
        try:
            return (await self.call("create_secret", name, data, labels=labels))["ID"]
        except APIError as exc:
            if exc.status_code != 409:
                raise
            return (await self.call("inspect_secret", name))["ID"]

    async def secrets(self, filters):
        return await self.call("secrets", filters=filters)

    async def remove_secret(self, secret_id, name, attempts=20):
        """Remove a secret, retrying while a service still refers to it."""
        for attempt in range(attempts):
            try:
                await self.call("remove_secret", secret_id)
                self.log.debug("Secret %s removed", name)
                return
            except NotFound:
                return
            except APIError as exc:
                # 400 "secret is in use" until its services are gone
                if attempt == attempts - 1:
                    self.log.warning("Failed to remove secret %s: %s", name, exc)
                    return
                await asyncio.sleep(0.25)

    async def remove_secrets(self, secrets):
        """Remove the listed secrets (as ``secrets()`` returns them), all at once."""
        await asyncio.gather(*(self.remove_secret(s["ID"], s["Spec"]["Name"]) for s in secrets))

    # Services and tasks

    async def create_service(self, spec):
        """The new service's ID; an existing one of that name is reused."""
        try:
            return (await self.call("create_service", **spec))["ID"]
        except APIError as exc:
            if exc.status_code != 409:
                raise
            return (await self.call("inspect_service", spec["name"]))["ID"]

    async def remove_service(self, service, name=None):
        try:
            await self.call("remove_service", service)
            self.log.debug("Service %s removed", name or service)
        except NotFound:
            pass

    async def remove_services(self, services):
        """Remove the listed services (as ``services()`` returns them), all at once."""
        await asyncio.gather(
            *(self.remove_service(s["ID"], s["Spec"]["Name"]) for s in services)
        )

    async def services(self, filters):
        return await self.call("services", filters=filters, status=False)

    async def tasks_of(self, service_ids):
        """All tasks of the given services, from one API call.

        The daemon's ``service`` filter fails as a whole if one service is
        gone, so the tasks are listed once and matched here.
        """
        if not service_ids:
            return []
        service_ids = set(service_ids)
        tasks = await self.call("tasks")
        return [t for t in tasks if t.get("ServiceID") in service_ids]

    # Nodes

    async def nodes(self):
        return await self.call("nodes")

    async def describe_node(self, node_id):
        """``node <hostname> is <state>, availability <availability>``."""
        try:
            node = await self.call("inspect_node", node_id)
        except NotFound:
            return f"node {node_id} has left the swarm"
        return "node {} is {}, availability {}".format(
            node["Description"]["Hostname"], node["Status"]["State"], node["Spec"]["Availability"]
        )
