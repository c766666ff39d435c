"""The swarm_status module: documentation, arguments and its wiring, with a fake Docker client.

The comparison itself is tested in tests/unit/plugins/module_utils/test_swarm_health.py;
the module against a real Docker daemon in tests/integration/modules/test_swarm_status.py.
"""

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from docker.errors import APIError

from ansible_collections.dask_swarm.gateway.plugins.modules import swarm_status


def raw_node(node_id, hostname, role="worker", state="ready"):
    raw = {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": "active"},
        "Description": {"Hostname": hostname},
        "Status": {"State": state},
    }
    if role == "manager":
        raw["ManagerStatus"] = {"Reachability": "reachable", "Leader": True}
    return raw


NODES = [raw_node("m" * 25, "mgr-01", "manager"), raw_node("w" * 25, "node-01")]


class FakeAPIClient:
    def __init__(self, nodes=None, swarm=None, nodes_error=None):
        self._nodes = NODES if nodes is None else nodes
        self._swarm = swarm or {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "m" * 25}
        self._nodes_error = nodes_error
        self.closed = False

    def info(self):
        return {"Swarm": self._swarm}

    def nodes(self):
        if self._nodes_error:
            raise self._nodes_error
        return self._nodes

    def close(self):
        self.closed = True


def run_module(args, capsys, monkeypatch, client, check_mode=False):
    monkeypatch.setattr(swarm_status, "get_docker_client", lambda module: client)
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            swarm_status.main()
    return json.loads(capsys.readouterr().out)


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(swarm_status.DOCUMENTATION)
    spec = swarm_status.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, option in doc["options"].items():
        assert option.get("type", "str") == spec[name].get("type", "str"), name
        assert option.get("default") == spec[name].get("default"), name
        assert sorted(option.get("aliases", [])) == sorted(spec[name].get("aliases", [])), name
    yaml.safe_load(swarm_status.EXAMPLES)
    assert {"healthy", "problems", "quorum", "missing", "down", "drained", "unexpected"} <= set(
        yaml.safe_load(swarm_status.RETURN)
    )


def test_healthy(capsys, monkeypatch):
    client = FakeAPIClient()
    result = run_module({"expected_managers": ["mgr-01"], "expected_workers": ["node-01"]}, capsys, monkeypatch, client)
    assert result["healthy"] is True and result["changed"] is False and "failed" not in result
    assert client.closed


def test_unhealthy_fails_with_the_problems(capsys, monkeypatch):
    result = run_module({"expected_managers": ["mgr-01"], "expected_workers": ["node-01", "node-02"]},
                        capsys, monkeypatch, FakeAPIClient())
    assert result["failed"] is True
    assert result["msg"] == "the swarm is unhealthy: missing worker node-02: no node has this ID or hostname"
    assert result["missing"][0]["entry"] == "node-02"


def test_report_only_does_not_fail(capsys, monkeypatch):
    result = run_module({"expected_workers": ["node-02"], "report_only": True}, capsys, monkeypatch, FakeAPIClient())
    assert "failed" not in result and result["healthy"] is False
    assert len(result["problems"]) == 3  # missing node-02, unexpected mgr-01 and node-01


def test_check_mode_reports_the_same(capsys, monkeypatch):
    result = run_module({"expected_managers": ["mgr-01"], "expected_workers": ["node-01"]},
                        capsys, monkeypatch, FakeAPIClient(), check_mode=True)
    assert result["healthy"] is True


def test_worker_node_is_refused(capsys, monkeypatch):
    client = FakeAPIClient(swarm={"LocalNodeState": "active", "ControlAvailable": False, "NodeID": "w" * 25})
    result = run_module({}, capsys, monkeypatch, client)
    assert result["failed"] is True and "is a swarm worker; run swarm_status on a manager" in result["msg"]


def test_node_outside_a_swarm_is_refused(capsys, monkeypatch):
    client = FakeAPIClient(swarm={"LocalNodeState": "inactive"})
    result = run_module({"report_only": True}, capsys, monkeypatch, client)
    assert result["failed"] is True and "not an active swarm node (LocalNodeState inactive)" in result["msg"]


def test_lost_quorum_is_reported(capsys, monkeypatch):
    error = APIError("500", explanation="rpc error: code = Unknown desc = The swarm does not have a leader.")
    result = run_module({"report_only": True}, capsys, monkeypatch, FakeAPIClient(nodes_error=error))
    assert result["healthy"] is False and result["quorum"]["ok"] is False
    assert "the swarm has no leader" in result["problems"][0]
