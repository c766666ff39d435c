"""Accounting of UserLimitsMixin: what a cluster holds, limits, refusals, clamps.

No Docker: a configured ``SwarmBackend`` with real upstream ``Cluster`` and
``Worker`` records in an in-memory ``DataManager``.
"""

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import DataManager, JobStatus
from dask_gateway_server.models import User
from dask_gateway_server.workqueue import WorkQueue
from traitlets import TraitError

from dask_gateway_swarm import SwarmBackend, SwarmClusterConfig
from dask_gateway_swarm.limits import UserLimits, validate_limit_overrides


@pytest.fixture
def backend():
    b = SwarmBackend(api_url="http://gateway:8000/api")
    b.db = DataManager(url="sqlite://")
    return b


def with_queue(backend):
    # Upstream's WorkQueue needs a running event loop.
    backend.queue = WorkQueue()
    return backend


def make_cluster(
    backend, username="bob", count=0, workers=0, status=JobStatus.RUNNING, **config
):
    config.setdefault("worker_cores", 1)
    config.setdefault("scheduler_cores", 1)
    cfg = SwarmClusterConfig(parent=backend, **config)
    cluster = backend.db.create_cluster(username, {}, cfg.to_dict())
    backend.db.update_cluster(cluster, status=status, count=count)
    for _ in range(workers):
        w = backend.db.create_worker(cluster)
        backend.db.update_worker(w, status=JobStatus.RUNNING)
    return cluster


def heartbeat(cluster, count):
    return {
        "scheduler_address": "tls://x:8786",
        "dashboard_address": "",
        "api_address": "http://x:8788",
        "count": count,
        "active_workers": [
            w.name for w in cluster.workers.values() if w.status < JobStatus.STOPPED
        ],
        "closing_workers": [],
        "closed_workers": [],
    }


def refusal(backend, cluster, count):
    with pytest.raises(PublicException) as info:
        backend.check_scale(cluster, count)
    return str(info.value)


# ----------------------------------------------------------------------
# Configuration


def test_overrides_validated_naming_the_bad_key():
    refusals = [
        (
            {"bob": {"max_worker": 3}},
            "user_limit_overrides['bob']: unknown limit 'max_worker' "
            "(expected one of max_clusters, max_workers, max_cores)",
        ),
        (
            {"bob": {"max_clusters": 1.5}},
            "user_limit_overrides['bob']: max_clusters must be a non-negative integer (0: no limit), got 1.5",
        ),
        (
            {"bob": {"max_cores": "8"}},
            "user_limit_overrides['bob']: max_cores must be a non-negative number (0: no limit), got '8'",
        ),
        (
            {"carol": 4},
            "user_limit_overrides['carol']: expected a dict with keys "
            "('max_clusters', 'max_workers', 'max_cores'), got 4",
        ),
    ]
    for overrides, message in refusals:
        with pytest.raises(TraitError) as info:
            SwarmBackend(user_limit_overrides=overrides)
        assert str(info.value) == message
    assert validate_limit_overrides({"bob": {"max_cores": 4}}) == {
        "bob": {"max_cores": 4.0}
    }


def test_user_limits_defaults_and_overrides():
    b = SwarmBackend(
        user_max_clusters=2,
        user_max_workers=8,
        user_max_cores=16,
        user_limit_overrides={"bob": {"max_workers": 2}, "root": {"max_clusters": 0}},
    )
    assert b.user_limits("alice") == UserLimits(2, 8, 16.0)
    assert b.user_limits("bob") == UserLimits(2, 2, 16.0)
    assert b.user_limits("root") == UserLimits(0, 8, 16.0)


# ----------------------------------------------------------------------
# What a cluster holds


async def test_cluster_holds_max_of_reservation_count_and_unstopped_workers(backend):
    c = make_cluster(backend, count=1, workers=2)
    assert backend.cluster_workers(c) == 2
    backend.reservations[c.name] = 5
    assert backend.cluster_workers(c) == 5
    backend.reservations[c.name] = 0
    backend.db.update_cluster(c, count=3)
    assert backend.cluster_workers(c) == 3
    assert backend.cluster_cores(c) == 3 * 1 + 1


async def test_stopping_cluster_counts_its_workers_until_stopped(backend):
    c = make_cluster(backend, count=3, workers=2, worker_cores=2, scheduler_cores=0.5)
    backend.reservations[c.name] = 4
    backend.db.update_cluster(c, target=JobStatus.STOPPED, status=JobStatus.CLOSING)
    assert backend.cluster_workers(c) == 2
    assert backend.cluster_cores(c) == 4.5
    first = next(iter(c.workers.values()))
    backend.db.update_worker(first, status=JobStatus.STOPPED)
    assert backend.cluster_workers(c) == 1
    backend.db.update_cluster(c, status=JobStatus.STOPPED)
    assert backend.cluster_workers(c) == 0
    assert backend.cluster_cores(c) == 0
    assert c.name not in backend.reservations


# ----------------------------------------------------------------------
# Refusals


async def test_gateway_wide_refusal_text(backend):
    backend.max_total_workers = 4
    a = make_cluster(backend, username="alice", count=3)
    b = make_cluster(backend, username="bob")
    assert refusal(backend, b, 2) == (
        "Scale request of 2 workers exceeds the gateway-wide limit of 4 workers "
        "for all users (1 available)"
    )
    backend.check_scale(b, 1)
    assert backend.workers_available(a.name) == 4


async def test_reserved_workers_count_for_other_clusters(backend):
    # A granted scale counts at once, before any heartbeat changes count.
    backend.max_total_workers = 4
    a = make_cluster(backend)
    b = make_cluster(backend, username="carol")
    backend.check_scale(a, 3)
    backend.reservations[a.name] = 3
    assert "(1 available)" in refusal(backend, b, 2)


async def test_per_user_worker_and_core_refusal_texts(backend):
    backend.user_limit_overrides = {"bob": {"max_workers": 8}, "carol": {"max_cores": 4}}
    make_cluster(backend, count=2)
    b2 = make_cluster(backend)
    assert refusal(backend, b2, 7) == (
        "Scale request of 7 workers exceeds the per-user limit of 8 workers "
        "for user bob (6 available)"
    )
    c1 = make_cluster(backend, username="carol", worker_cores=0.5, scheduler_cores=0.5)
    # 4.0 - 0.5 scheduler = 3.5 cores: 7 workers of 0.5
    backend.check_scale(c1, 7)
    assert refusal(backend, c1, 8) == (
        "Scale request of 8 workers exceeds the per-user limit of 4.0 cores "
        "for user carol (3.5 cores available)"
    )


async def test_scale_down_accepted_when_others_hold_more_than_the_cap(backend):
    # e.g. the cap was lowered at a restart
    backend.max_total_workers = 2
    a = make_cluster(backend, count=2, workers=2)
    make_cluster(backend, username="carol", count=2, workers=2)
    backend.check_scale(a, 1)
    backend.check_scale(a, 2)
    assert "(0 available)" in refusal(backend, a, 3)


async def test_max_clusters_counts_running_or_starting(backend):
    backend.user_max_clusters = 2
    config = SwarmClusterConfig(parent=backend)
    make_cluster(backend, status=JobStatus.CREATED)
    stopping = make_cluster(backend, workers=1)
    with pytest.raises(PublicException) as info:
        backend.check_new_cluster("bob", config)
    assert (
        str(info.value)
        == "User bob may run at most 2 clusters at once (2 running or starting)"
    )
    backend.check_new_cluster("carol", config)
    backend.db.update_cluster(stopping, target=JobStatus.STOPPED)
    backend.check_new_cluster("bob", config)


async def test_new_cluster_scheduler_cores_within_core_limit(backend):
    backend.user_max_cores = 2.5
    make_cluster(backend, count=1)  # 1 worker core + 1 scheduler core
    with pytest.raises(PublicException) as info:
        backend.check_new_cluster(
            "bob", SwarmClusterConfig(parent=backend, scheduler_cores=1)
        )
    assert str(info.value) == (
        "New cluster with 1.0 scheduler cores exceeds the per-user limit of 2.5 cores "
        "for user bob (0.5 cores available)"
    )
    backend.check_new_cluster(
        "bob", SwarmClusterConfig(parent=backend, scheduler_cores=0.5)
    )


async def test_start_cluster_refused_before_a_record_is_made(backend):
    with_queue(backend)
    backend.user_max_clusters = 1
    await backend.start_cluster(User("bob"), {})
    with pytest.raises(PublicException) as info:
        await backend.start_cluster(User("bob"), {})
    assert str(info.value) == "User bob may run at most 1 clusters at once (1 running or starting)"
    assert len(backend.db.list_clusters("bob")) == 1


# ----------------------------------------------------------------------
# Heartbeats: clamps and reservations


async def test_heartbeat_clamps_to_every_limit_but_never_below_held(backend):
    with_queue(backend)
    backend.max_total_workers = 5
    backend.user_max_workers = 3
    other = make_cluster(backend, username="carol", count=3)
    c = make_cluster(backend)
    assert backend.clamp_count(c, 10) == 2  # gateway-wide: 5 - 3
    await backend.on_cluster_heartbeat(c.name, heartbeat(c, 10))
    assert c.count == 2
    backend.db.update_cluster(other, count=0)
    await backend.on_cluster_heartbeat(c.name, heartbeat(c, 10))
    assert c.count == 3  # per-user
    backend.max_total_workers = 1
    await backend.on_cluster_heartbeat(c.name, heartbeat(c, 3))
    assert c.count == 3  # holds 3 already: not shrunk by a lowered cap


async def test_reservation_ends_when_a_heartbeat_reports_it(backend):
    with_queue(backend)
    c = make_cluster(backend, count=0)
    backend.reservations[c.name] = 2
    await backend.on_cluster_heartbeat(c.name, heartbeat(c, 0))  # sent before the scale
    assert backend.reservations[c.name] == 2
    await backend.on_cluster_heartbeat(c.name, heartbeat(c, 2))
    assert c.name not in backend.reservations
    assert c.count == 2


async def test_failed_forward_releases_the_reservation(backend):
    c = make_cluster(backend, status=JobStatus.SUBMITTED)
    with pytest.raises(PublicException) as info:
        await backend.forward_message_to_scheduler(
            c.to_model(), {"op": "scale", "count": 2}
        )
    assert str(info.value) == f"cluster {c.name} is not running"
    assert c.name not in backend.reservations


# ----------------------------------------------------------------------
# Admins and allowed users


async def test_admin_lists_every_users_clusters(backend):
    backend.admin_users = {"alice"}
    make_cluster(backend, username="bob")
    make_cluster(backend, username="carol")
    assert {c.username for c in await backend.list_clusters(username="alice")} == {
        "bob",
        "carol",
    }
    assert {c.username for c in await backend.list_clusters(username="bob")} == {"bob"}


async def test_clusters_of_removed_users_are_stopped(backend, caplog):
    with_queue(backend)
    keep = make_cluster(backend, username="bob")
    gone = make_cluster(backend, username="carol")
    await backend.stop_clusters_of_removed_users()  # empty: no check
    assert gone.target == JobStatus.RUNNING
    backend.allowed_users = {"alice", "bob"}
    backend.log.setLevel("INFO")
    backend.log.propagate = True
    with caplog.at_level("INFO"):
        await backend.stop_clusters_of_removed_users()
    assert gone.target == JobStatus.STOPPED
    assert keep.target == JobStatus.RUNNING
    assert f"Stopping cluster {gone.name} of removed user carol" in caplog.text


# ----------------------------------------------------------------------
# A starting cluster's addresses: its own service's only


def own_addresses(backend, cluster):
    service = backend.naming.scheduler_service(cluster.name)
    return {"scheduler_address": f"tls://{service}:8786", "api_address": f"http://{service}:8788",
            "dashboard_address": f"http://{service}:8787"}


async def test_a_starting_cluster_reporting_its_own_addresses_runs(backend):
    with_queue(backend)
    c = make_cluster(backend, status=JobStatus.SUBMITTED)
    await backend.on_cluster_heartbeat(c.name, {**heartbeat(c, 0), **own_addresses(backend, c)})
    assert c.target == JobStatus.RUNNING
    assert c.scheduler_address == own_addresses(backend, c)["scheduler_address"]


@pytest.mark.parametrize("key, value", [
    ("scheduler_address", "tls://dask-gateway-swarm-otherscluster:8786"),
    ("api_address", "http://dask-gateway_gateway:8081"),
    ("dashboard_address", "http://10.0.0.1:2375"),
])
async def test_a_starting_cluster_reporting_foreign_addresses_is_failed_unrouted(backend, key, value):
    # Upstream would route the public proxy (and its own calls) there.
    with_queue(backend)
    c = make_cluster(backend, status=JobStatus.SUBMITTED)
    await backend.on_cluster_heartbeat(c.name, {**heartbeat(c, 0), **own_addresses(backend, c), key: value})
    assert c.target == JobStatus.FAILED
    assert c.scheduler_address == ""
    assert f"{key} {value!r}" in backend.failure_reasons[c.name]
