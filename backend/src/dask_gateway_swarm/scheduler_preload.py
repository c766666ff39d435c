"""Scheduler preload: advertise the scheduler by its Swarm service name, and
let the gateway close it.

A scheduler listening on all interfaces in a Swarm task would advertise the
address of its default route, the docker_gwbridge network, which neither the
gateway nor the workers can reach. The backend passes the address to advertise
(``tls://<service name>:<port>``) in ``DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS``;
this preload must come before ``dask_gateway.scheduler_preload`` so that the
gateway's heartbeat, API and dashboard addresses are derived from it.

Stopping a cluster, the gateway asks the scheduler to close (``{"op":
"close"}`` on the gateway API the upstream preload serves): the scheduler
closes its workers and exits, in about a second. Swarm alone would first
wait about two seconds after a service's removal, then stop each container
within its grace period.
"""

import asyncio
import logging
import os

from dask_gateway import scheduler_preload as gateway_preload
from tornado import web

logger = logging.getLogger(__name__)

ENV_VAR = "DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS"


class CommHandler(gateway_preload.CommHandler):
    """Upstream's gateway API, plus the ``close`` op."""

    @web.authenticated
    async def post(self):
        if (self.json_data or {}).get("op") != "close":
            return await super().post()
        scheduler = self.gateway_service.scheduler
        logger.info("Closing at the gateway's request")
        # After this response is sent: closing stops the API's server.
        self.gateway_service.close_task = asyncio.ensure_future(
            scheduler.close(reason="cluster stopped by the gateway")
        )
        self.set_status(200)


def dask_setup(scheduler):
    # Read when the upstream preload, loaded next, builds its API.
    gateway_preload.CommHandler = CommHandler
    address = os.environ.get(ENV_VAR)
    if not address:
        logger.warning("%s not set, scheduler advertises %s", ENV_VAR, scheduler.address)
        return
    # ``Server.address`` caches the listener's contact address in ``_address``.
    scheduler._address = address
    logger.info("Scheduler advertised at %s", address)
