"""gateway_auth: jupyterhub, against a real JupyterHub.

The hub (backend/tests/integration/hubprocess.py) runs on this machine, its
API on the fleet network's bridge address, where the gateway's container
reaches it. The gateway play is rerun with
gateway_auth: jupyterhub, as an admin would, and rerun as before at the end.
"""

from __future__ import annotations

import gc
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from conftest import Fleet, assert_no_secret_printed

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))
from clienthelpers import call, close_gateway, http_status, open_client, open_cluster, wait_for  # noqa: E402
from dask_gateway import Gateway, JupyterHubAuth  # noqa: E402
from hubprocess import Hub  # noqa: E402

pytestmark = [pytest.mark.auth("simple"), pytest.mark.changes_deployment, pytest.mark.gateway_variant]

# worker_memory as DaskHub's users type it: a number, GiB.
CLUSTER_OPTIONS = {"worker_cores": 0.5, "worker_memory": 1}
SERVICE = "dask-gateway"
USER_LABEL = "dask-gateway-swarm.user"
CLUSTER_LABEL = "dask-gateway-swarm.cluster"


@pytest.fixture
def hub(fleet: Fleet, tmp_path: Path):
    networks = json.loads(subprocess.check_output(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", fleet.first_manager.container], text=True))
    (network,) = networks.values()
    hub = Hub(tmp_path, network["Gateway"], service=SERVICE, access=["alice", "bob"], admins=["root"])
    try:
        yield hub
    finally:
        hub.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def names(gateway: Gateway) -> set[str]:
    return {c.name for c in call(gateway.list_clusters)}


def test_jupyterhub_tokens_log_users_in(rerun_gateway, gateway_vars, fleet: Fleet, hub: Hub, tmp_path: Path) -> None:
    url = gateway_vars["gateway_public_url"]
    stack = gateway_vars["gateway_stack_name"]
    manager = fleet.first_manager.host
    tokens = {"alice": hub.user_token("alice"), "bob": hub.user_token("bob"),
              "carol": hub.user_token("carol"), "root": hub.user_token("root")}
    extra = tmp_path / "jupyterhub-auth.json"
    extra.write_text(json.dumps({"gateway_auth": "jupyterhub", "gateway_jupyterhub_api_url": hub.api_url,
                                 "gateway_jupyterhub_api_token": hub.gateway_token}))
    extra.chmod(0o600)
    gateways = {}
    try:
        run = rerun_gateway("-e", f"@{extra}")
        assert_no_secret_printed(run, hub.gateway_token, *tokens.values())
        api = url + "/api/v1/clusters/"
        wait_for(lambda: http_status(api, hub_token=tokens["alice"]) == 200, 120, message="alice's token to work")
        # Without the hub's access:services scope, with a bad token, or with a
        # password, nobody gets in.
        assert http_status(api, hub_token=tokens["carol"]) == 401
        assert http_status(api, hub_token=secrets.token_hex(32)) == 401
        assert http_status(api, ("alice", "any-password")) == 401

        gateways = {user: Gateway(url, auth=JupyterHubAuth(api_token=token)) for user, token in tokens.items()}
        with open_cluster(gateways["alice"], **CLUSTER_OPTIONS) as cluster:
            call(cluster.scale, 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 1, timeout=180)
                assert call(client.submit(sum, range(100)).result) == 4950
                limits = call(client.run, lambda dask_worker: dask_worker.memory_manager.memory_limit)
                assert set(limits.values()) == {2**30}, limits
            # The hub's user is the gateway's user, down to the Swarm labels.
            services = manager.check_output(f"docker service ls -q --filter label={CLUSTER_LABEL}={cluster.name}").split()
            owners = {manager.check_output(f"docker service inspect --format '{{{{index .Spec.Labels \"{USER_LABEL}\"}}}}' {s}")
                      for s in services}
            assert owners == {"alice"}
            assert names(gateways["alice"]) == {cluster.name}
            # Another hub user neither sees nor reaches it; a hub admin sees it.
            assert names(gateways["bob"]) == set()
            with pytest.raises(aiohttp.ClientResponseError) as refused:
                call(lambda: gateways["bob"].connect(cluster.name), timeout=60)
            assert refused.value.status == 403
            gc.collect()
            assert cluster.name in names(gateways["root"])
        inspected = manager.check_output(f"docker service inspect {stack}_gateway")
        assert hub.gateway_token not in inspected
    finally:
        for gateway in gateways.values():
            close_gateway(gateway)
        restored = rerun_gateway()
    # Back to the scenario's own auth: the hub token's secret is gone too.
    assert_no_secret_printed(restored, hub.gateway_token)
    assert not manager.check_output(f"docker secret ls -q --filter name={stack}_jupyterhub_token")
