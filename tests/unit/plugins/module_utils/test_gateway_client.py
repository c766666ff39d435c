"""GatewayCheck's decisions and step handling, driven by an in-memory fake client.

The real client against a real dask-gateway-server is exercised by
tests/integration/modules/test_gateway_check.py.
"""

import asyncio
import base64
import socket

import pytest
from aiohttp import web

from ansible_collections.dask_swarm.gateway.plugins.module_utils.gateway_client import (
    MASK,
    STEPS,
    GatewayCheck,
    StepFailed,
    basic_auth_header,
    build_cluster_options,
    compare_versions,
    dashboard_headers,
    make_node_probe,
    make_ssl_context,
    placement_problem,
    redact,
    run_check,
    same_origin,
    scale_timeout_message,
    secret_variants,
    summarize_placement,
)
from gateway_fakes import FakeGateway


def check_with(gateway, **kwargs):
    kwargs.setdefault("workers", 3)
    kwargs.setdefault("timeout", 2)
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("check_dashboard", False)
    return GatewayCheck(lambda: gateway, **kwargs)


# -- pure helpers --------------------------------------------------------------


def test_step_failed_names_the_step():
    assert str(StepFailed("scale", "2 of 3 workers after 120 s")) == "step scale: 2 of 3 workers after 120 s"


def test_scale_timeout_message():
    assert scale_timeout_message(2, 3, 120) == "2 of 3 workers after 120 s"
    assert scale_timeout_message(0, 1, 2.5) == "0 of 1 workers after 2.5 s"


def test_secret_variants_cover_plain_quoted_and_basic_auth():
    variants = secret_variants("alice", "p@ss word")
    assert "p@ss word" in variants
    assert "p%40ss%20word" in variants
    assert base64.b64encode(b"alice:p@ss word").decode() in variants
    assert secret_variants("alice", None) == []


def test_redact_nested():
    secrets = secret_variants("alice", "hunter2")
    value = {"msg": "401 for hunter2", "list": ["x hunter2", 3], "hunter2": None}
    assert redact(value, secrets) == {"msg": "401 for " + MASK, "list": ["x " + MASK, 3], MASK: None}


def test_basic_auth_header_matches_the_client():
    from dask_gateway import BasicAuth

    headers, _ = BasicAuth("alice", "pw").pre_request(None)
    assert basic_auth_header("alice", "pw") == headers


def test_compare_versions_equal_and_python_patch_ignored():
    pk = {"python": "3.11.7.final.0", "dask": "1", "distributed": "1"}
    versions = {
        "client": {"packages": pk},
        "scheduler": {"packages": dict(pk, python="3.11.9.final.0")},
        "workers": {"w1": {"packages": pk}, "w2": {"packages": pk}},
    }
    summary, mismatches = compare_versions(versions, ["python", "dask", "distributed"])
    assert mismatches == []
    assert summary["dask"] == {"client": "1", "scheduler": "1", "workers": ["1"]}
    assert summary["python"]["workers"] == ["3.11.7.final.0"]


def test_compare_versions_reports_where_they_differ():
    pk = {"dask": "1", "distributed": "1"}
    versions = {
        "client": {"packages": pk},
        "scheduler": {"packages": pk},
        "workers": {"w1": {"packages": pk}, "w2": {"packages": dict(pk, distributed="2")}},
    }
    _, mismatches = compare_versions(versions, ["dask", "distributed"])
    assert mismatches == ["distributed differs: 1 on client, scheduler, worker w1; 2 on worker w2"]


def test_node_probe_prefers_the_env_var(monkeypatch):
    monkeypatch.delenv("DASK_SWARM_NODE_ID", raising=False)
    probe = make_node_probe(["DASK_SWARM_NODE_ID"])
    assert probe() == {"hostname": socket.gethostname(), "node": socket.gethostname(), "node_source": "hostname"}
    monkeypatch.setenv("DASK_SWARM_NODE_ID", "n0de1d")
    assert probe()["node"] == "n0de1d" and probe()["node_source"] == "DASK_SWARM_NODE_ID"


def test_node_probe_runs_where_the_collection_is_not_importable(tmp_path):
    # Workers cannot import this collection: the probe must travel by value.
    import json
    import subprocess
    import sys

    import cloudpickle

    payload = cloudpickle.dumps(make_node_probe(["DASK_SWARM_NODE_ID"]))
    code = (
        "import json, sys, cloudpickle\n"
        "assert not any('.collections' in p for p in sys.path)\n"
        "print(json.dumps(cloudpickle.loads(sys.stdin.buffer.read())()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=payload,
        capture_output=True,
        cwd=str(tmp_path),
        env={"DASK_SWARM_NODE_ID": "abc123", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {"hostname": socket.gethostname(), "node": "abc123", "node_source": "DASK_SWARM_NODE_ID"}


def test_placement_summary_and_problems():
    placement = summarize_placement(
        {
            "tls://a:1": {"hostname": "c1", "node": "n1"},
            "tls://a:2": {"hostname": "c2", "node": "n1"},
            "tls://a:3": {"hostname": "c3", "node": "n2"},
        }
    )
    assert placement["nodes"] == {"n1": 2, "n2": 1}
    assert placement["distinct_nodes"] == 2
    assert placement_problem(placement, min_distinct_nodes=2) is None
    assert placement_problem(placement, min_distinct_nodes=3) == (
        "workers ran on 2 distinct nodes [n1 (2), n2 (1)], at least 3 expected"
    )
    assert placement_problem(placement, expect_worker_nodes=["n2", "c1"]) is None
    assert placement_problem(placement, expect_worker_nodes=["n3"]) == "no worker ran on n3; workers ran on [n1 (2), n2 (1)]"


def test_build_cluster_options_with_the_real_options_class():
    from dask_gateway.options import Float, Integer, Options

    options = Options(Integer("worker_cores", 1, min=1, max=4), Float("worker_memory", 1.0))
    build_cluster_options(options, {"worker_cores": 2})
    assert dict(options) == {"worker_cores": 2, "worker_memory": 1.0}
    with pytest.raises(ValueError) as info:
        build_cluster_options(options, {"image": "x"})
    assert str(info.value) == "the gateway offers no option image (it offers: worker_cores, worker_memory)"
    with pytest.raises(ValueError) as info:
        build_cluster_options(options, {"worker_cores": 9})
    assert str(info.value) == "option worker_cores=9 rejected: ValueError: worker_cores must be <= 4.000000, got 9"


def test_same_origin_and_dashboard_headers():
    assert same_origin("http://gw:80/clusters/x", "http://gw")
    assert not same_origin("http://gw:8787/", "http://gw:8000")
    auth = {"origins": ["http://gw:8000"], "headers": {"Authorization": "Basic x"}}
    assert dashboard_headers("http://gw:8000/clusters/c/status", auth) == {"Authorization": "Basic x"}
    assert dashboard_headers("http://elsewhere:8000/status", auth) == {}
    assert dashboard_headers("http://gw:8000/", None) == {}


def test_ssl_context_only_for_https():
    assert make_ssl_context("http://gw", validate_certs=False) is None
    assert make_ssl_context("https://gw", validate_certs=False) is False
    assert make_ssl_context("https://gw") is None


# -- the check, step by step -----------------------------------------------------


def test_full_check_passes_and_times_every_step():
    gw = FakeGateway()
    result = run_check(check_with(gw, min_distinct_nodes=2, cluster_options={"worker_cores": 2}))
    assert "failed_step" not in result, result.get("msg")
    assert [s["name"] for s in result["steps"]] == [s for s in STEPS if s != "dashboard"]
    assert all(s["ok"] and s["seconds"] >= 0 for s in result["steps"])
    assert set(result["timings"]) == set(s["name"] for s in result["steps"])
    assert result["computation"]["result"] == result["computation"]["expected"]
    assert result["nodes"] == {"node-a": 2, "node-b": 1}
    assert result["cleanup"] == {"cluster": result["cluster_name"], "stopped": True, "error": None}
    assert gw.submitted == {"worker_cores": 2, "worker_memory": 2.0}
    assert gw.scaled_to == 3
    assert gw.clusters == {}
    assert gw.closed and all(c.closed for c in gw.clients) and all(c.closed for c in gw.cluster_objects)


def test_check_mode_only_connects_and_lists():
    gw = FakeGateway()
    gw.clusters = {"someone-elses": {}}
    result = run_check(check_with(gw, check_mode=True))
    assert gw.calls == ["list_clusters"]
    assert result["clusters"] == [{"name": "someone-elses", "status": "RUNNING"}]
    assert [s["name"] for s in result["steps"]] == ["connect"]
    assert "cleanup" not in result and "failed_step" not in result
    assert gw.closed


def test_connect_failure_names_the_step_and_creates_nothing():
    gw = FakeGateway(fail_on={"list_clusters": ValueError("401: Unauthorized")})
    result = run_check(check_with(gw))
    assert result["failed_step"] == "connect"
    assert result["msg"] == "step connect: ValueError: 401: Unauthorized"
    assert "submit" not in gw.calls and "cleanup" not in result


def test_hanging_call_times_out():
    gw = FakeGateway(hang_on="list_clusters")
    result = run_check(check_with(gw, timeout=0.3))
    assert result["msg"] == "step connect: no answer after 0.3 s"


def test_unknown_option_fails_step_options():
    result = run_check(check_with(FakeGateway(), cluster_options={"gpu": 1}))
    assert result["failed_step"] == "options"
    assert "offers no option gpu (it offers: worker_cores, worker_memory)" in result["msg"]


def test_create_that_hangs_is_still_cleaned_up():
    gw = FakeGateway(hang_on="create")
    result = run_check(check_with(gw, timeout=0.3))
    assert result["failed_step"] == "create"
    assert result["cleanup"]["stopped"] is True
    assert gw.clusters == {} and gw.cluster_objects[0].closed


def test_too_few_workers_fail_step_scale_and_clean_up():
    gw = FakeGateway(workers_that_start=2)
    result = run_check(check_with(gw, timeout=0.3))
    assert result["msg"] == "step scale: 2 of 3 workers after 0.3 s"
    assert result["failed_step"] == "scale"
    assert result["steps"][-1] == {"name": "scale", "seconds": result["timings"]["scale"], "ok": False}
    assert result["cleanup"]["stopped"] is True and gw.clusters == {}
    assert gw.clients[0].closed


def test_wrong_result_fails_step_compute():
    gw = FakeGateway(compute_error=1)
    result = run_check(check_with(gw))
    assert result["failed_step"] == "compute"
    assert result["msg"].startswith("step compute: sum of 200 squares is ")
    assert gw.clusters == {}


def test_version_mismatch_fails_unless_allowed():
    result = run_check(check_with(FakeGateway(worker_versions={"distributed": "2025.1.0"})))
    assert result["failed_step"] == "versions"
    assert "distributed differs: 2025.1.0 on worker" in result["msg"]
    assert "install it from the collection's client/requirements.txt" in result["msg"]
    assert "run `make lock` in the collection's checkout and rerun site.yml" in result["msg"]
    relaxed = run_check(check_with(FakeGateway(worker_versions={"distributed": "2025.1.0"}), check_versions=False))
    assert "failed_step" not in relaxed
    assert relaxed["version_mismatches"][0].startswith("distributed differs")


def test_workers_on_one_node_fail_when_spread_is_expected():
    gw = FakeGateway(worker_nodes=["node-a"])
    result = run_check(check_with(gw, min_distinct_nodes=2))
    assert result["msg"] == "step placement: workers ran on 1 distinct node [node-a (3)], at least 2 expected"
    assert result["workers"][0]["node"] == "node-a"
    assert gw.clusters == {}


def test_cluster_still_listed_fails_step_shutdown():
    gw = FakeGateway(stop_removes=False)
    result = run_check(check_with(gw, timeout=0.3))
    assert result["failed_step"] == "shutdown"
    assert result["msg"].endswith("still listed (RUNNING) after 0.3 s")


def test_failed_cleanup_is_reported():
    gw = FakeGateway(workers_that_start=0, fail_on={"stop_cluster": ValueError("gateway gone")})
    result = run_check(check_with(gw, timeout=0.3))
    assert result["failed_step"] == "scale"
    assert result["cleanup"] == {"cluster": result["cluster_name"], "stopped": False, "error": "ValueError: gateway gone"}
    assert "cleanup: cluster %s may still be running" % result["cluster_name"] in result["msg"]


def test_failed_cleanup_after_passing_steps_fails_the_check():
    class StopOnlyOnce(FakeGateway):
        async def stop_cluster(self, name):
            self.calls.append("stop_cluster")
            raise ValueError("no")

    gw = StopOnlyOnce()
    result = run_check(check_with(gw))
    assert result["failed_step"] == "shutdown"
    assert result["cleanup"]["stopped"] is False


# -- the dashboard, against a real local HTTP server ---------------------------


@pytest.fixture()
def http_server():
    """A tiny aiohttp server on 127.0.0.1 that records the Authorization headers it gets."""
    seen = []
    loop = asyncio.new_event_loop()

    async def handler(request):
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=int(request.match_info["status"]), text="dashboard")

    app = web.Application()
    app.router.add_get("/clusters/{name}/{status}", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]

    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % port, seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_dashboard_200_with_credentials_for_the_gateway_origin(http_server):
    base, seen = http_server
    gw = FakeGateway(dashboard_link=base + "/clusters/c/200")
    auth = {"origins": [base], "headers": basic_auth_header("alice", "pw")}
    result = run_check(check_with(gw, check_dashboard=True, dashboard_auth=auth))
    assert "failed_step" not in result, result.get("msg")
    assert result["dashboard_status"] == 200
    assert seen == [basic_auth_header("alice", "pw")["Authorization"]]


def test_dashboard_of_another_origin_gets_no_credentials(http_server):
    base, seen = http_server
    gw = FakeGateway(dashboard_link=base + "/clusters/c/200")
    auth = {"origins": ["http://gateway.example:8000"], "headers": basic_auth_header("alice", "pw")}
    run_check(check_with(gw, check_dashboard=True, dashboard_auth=auth))
    assert seen == [None]


def test_dashboard_404_fails_step_dashboard(http_server):
    base, _ = http_server
    gw = FakeGateway(dashboard_link=base + "/clusters/c/404")
    result = run_check(check_with(gw, check_dashboard=True))
    assert result["msg"] == "step dashboard: HTTP 404 from %s/clusters/c/404" % base
    assert gw.clusters == {}


def test_missing_dashboard_link_fails_step_dashboard():
    result = run_check(check_with(FakeGateway(dashboard_link=None), check_dashboard=True))
    assert result["failed_step"] == "dashboard"
    assert "reports no dashboard link" in result["msg"]


def test_tls_choice_reaches_every_gateway_object():
    gw = FakeGateway()
    result = run_check(check_with(gw, ssl_context=False))
    assert "failed_step" not in result, result.get("msg")
    # the gateway's own client and the one inside the cluster object
    assert gw._request_kwargs["ssl"] is False
