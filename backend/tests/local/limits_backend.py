"""The backend the local tests run: upstream's local processes, with the limits.

Imported by the dask-gateway-server process the tests start (this directory
is on its PYTHONPATH).
"""

import asyncio

from dask_gateway_server.backends.local import UnsafeLocalBackend
from traitlets import Float

from dask_gateway_swarm.limits import UserLimitsMixin


class LocalLimitsBackend(UserLimitsMixin, UnsafeLocalBackend):
    """``UnsafeLocalBackend`` with ``UserLimitsMixin``: no Docker needed."""

    worker_stop_delay = Float(
        0,
        help="""
        Seconds a worker takes to stop, like a Swarm task in its stop grace
        period: keeps stopping clusters observable.
        """,
        config=True,
    )

    async def do_stop_worker(self, worker):
        if self.worker_stop_delay:
            await asyncio.sleep(self.worker_stop_delay)
        await super().do_stop_worker(worker)
