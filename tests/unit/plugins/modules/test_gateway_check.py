"""The gateway_check module: documentation, arguments, and its output with a fake client.

The module against a real dask-gateway-server: tests/integration/modules.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.dask_swarm.gateway.plugins.modules import gateway_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))
from gateway_fakes import FakeGateway  # noqa: E402

PASSWORD = "Tr0ub4dor&3-secret"


def run_module(args, capsys, monkeypatch, gateway=None, check_mode=False):
    if gateway is not None:
        monkeypatch.setattr(gateway_check, "make_gateway_factory", lambda *a, **k: (lambda: gateway))
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            gateway_check.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(gateway_check.DOCUMENTATION)
    spec = gateway_check.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, option in doc["options"].items():
        assert option.get("type", "str") == spec[name].get("type", "str"), name
        assert option.get("default") == spec[name].get("default"), name
        assert bool(option.get("required")) == bool(spec[name].get("required")), name
    assert spec["password"]["no_log"] is True
    yaml.safe_load(gateway_check.EXAMPLES)
    returned = yaml.safe_load(gateway_check.RETURN)
    assert {"steps", "timings", "failed_step", "cleanup", "nodes", "versions"} <= set(returned)


def test_success_is_unchanged_and_returns_timings(capsys, monkeypatch):
    gw = FakeGateway()
    _, result = run_module({"address": "http://gw:8000", "password": PASSWORD, "workers": 3, "check_dashboard": False},
                           capsys, monkeypatch, gw)
    assert result["changed"] is False
    assert "failed" not in result
    assert set(result["timings"]) == {"connect", "options", "create", "scale", "compute", "versions", "placement", "shutdown"}


def test_failure_names_the_step_and_hides_the_password(capsys, monkeypatch):
    # An error message that (wrongly) repeats the password must not leak it.
    gw = FakeGateway(fail_on={"list_clusters": ValueError("bad credentials %s for alice" % PASSWORD)})
    out, result = run_module({"address": "http://gw:8000", "username": "alice", "password": PASSWORD}, capsys, monkeypatch, gw)
    assert result["failed"] is True
    assert result["failed_step"] == "connect"
    assert result["msg"].startswith("step connect: ValueError: bad credentials ")
    assert PASSWORD not in out


def test_check_mode_creates_nothing(capsys, monkeypatch):
    gw = FakeGateway()
    _, result = run_module({"address": "http://gw:8000", "password": PASSWORD}, capsys, monkeypatch, gw, check_mode=True)
    assert gw.calls == ["list_clusters"]
    assert [s["name"] for s in result["steps"]] == ["connect"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"timeout": 0}, "timeout must be at least 1 second"),
        ({"workers": 2, "min_distinct_nodes": 3}, "min_distinct_nodes (3) cannot exceed workers (2)"),
    ],
)
def test_bad_arguments(args, message, capsys, monkeypatch):
    _, result = run_module(dict({"address": "http://gw:8000"}, **args), capsys, monkeypatch, FakeGateway())
    assert result["failed"] is True and message in result["msg"]


def test_dashboard_credentials_only_with_a_password():
    params = {"address": "http://gw:8000", "public_address": None, "username": "bob", "password": None}
    assert gateway_check.dashboard_auth(params) is None
    params["password"] = "x"
    auth = gateway_check.dashboard_auth(params)
    assert auth["origins"] == ["http://gw:8000"]
    assert auth["headers"]["Authorization"].startswith("Basic ")
