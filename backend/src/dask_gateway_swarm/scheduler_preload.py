"""Scheduler preload: advertise the scheduler by its Swarm service name.

A scheduler listening on all interfaces in a Swarm task would advertise the
address of its default route, the docker_gwbridge network, which neither the
gateway nor the workers can reach. The backend passes the address to advertise
(``tls://<service name>:<port>``) in ``DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS``;
this preload must come before ``dask_gateway.scheduler_preload`` so that the
gateway's heartbeat, API and dashboard addresses are derived from it.
"""

import logging
import os

logger = logging.getLogger(__name__)

ENV_VAR = "DASK_GATEWAY_SWARM_SCHEDULER_ADDRESS"


def dask_setup(scheduler):
    address = os.environ.get(ENV_VAR)
    if not address:
        logger.warning("%s not set, scheduler advertises %s", ENV_VAR, scheduler.address)
        return
    # ``Server.address`` caches the listener's contact address in ``_address``.
    scheduler._address = address
    logger.info("Scheduler advertised at %s", address)
