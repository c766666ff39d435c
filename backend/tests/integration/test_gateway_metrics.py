"""The gateway's Prometheus metrics, scraped as Prometheus would.

Real swarm, real gateway, stock client; the scrape goes through the
gateway's public port with the metrics token, and is read with
prometheus_client's own parser.
"""

import urllib.error
import urllib.request

import pytest
from clienthelpers import call, open_client, open_cluster, open_gateway, wait_for
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

import harness

USER = "alice"


def scrape(deployment, token):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"{deployment.address}/api/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(deployment):
    """Every sample of a scrape: (name, sorted label items) -> value."""
    _, text = scrape(deployment, deployment.metrics_token)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0)


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_metrics_need_the_token(gateway, token):
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(gateway, token)
    assert refused.value.code == 401


def test_metrics_follow_a_cluster_from_start_to_stop(gateway):
    content_type, _ = scrape(gateway, gateway.metrics_token)
    # Prometheus's text format, as prometheus_client names it.
    assert content_type == CONTENT_TYPE_LATEST
    before = samples(gateway)
    with open_gateway(gateway, user=USER) as gw:
        with open_cluster(gw) as cluster:
            call(cluster.scale, 1)
            with open_client(cluster) as client:
                call(client.wait_for_workers, 1, timeout=120)
            found = wait_for(
                lambda: (m := samples(gateway))
                and value(m, "dask_gateway_workers", user=USER, state="running") == 1
                and m,
                30,
                message="the running worker in the metrics",
            )
            assert value(found, "dask_gateway_clusters", user=USER, state="running") == 1
            for kind in ("cluster", "worker"):
                grew = value(found, "dask_gateway_start_seconds_count", kind=kind) - value(
                    before, "dask_gateway_start_seconds_count", kind=kind
                )
                assert grew >= 1, f"no {kind} start latency observed"
            assert value(found, "dask_gateway_docker_api_seconds_count", method="create_service") >= 2
    wait_for(
        lambda: value(samples(gateway), "dask_gateway_clusters", user=USER, state="running") == 0,
        30,
        message="the stopped cluster to leave the running count",
    )


def test_metrics_show_a_worker_swarm_cannot_place_and_its_failure(gateway, swarm):
    before = samples(gateway)
    with open_gateway(gateway, user=USER) as gw:
        # Swarm cannot place the pool's workers: its only node is paused.
        with open_cluster(gw, node_pool="arm64") as cluster, harness.unavailable_pool(swarm, "arm64"):
            call(cluster.scale, 1)
            pending = wait_for(
                lambda: [
                    dict(labels)["reason"]
                    for (name, labels), v in samples(gateway).items()
                    if name == "dask_gateway_pending_tasks" and dict(labels)["kind"] == "worker" and v >= 1
                ],
                60,
                interval=1,
                message="a pending worker task with Swarm's reason",
            )
            assert any(reason.startswith("no suitable node") for reason in pending), pending
            wait_for(
                lambda: value(samples(gateway), "dask_gateway_start_failures_total", kind="worker")
                > value(before, "dask_gateway_start_failures_total", kind="worker"),
                60,
                interval=1,
                message="the worker's start failure in the metrics",
            )
