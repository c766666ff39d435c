"""The preflight play refuses bad input before anything changes.

Each case runs the real playbooks/preflight.yml with ansible-playbook against
an inventory of its own whose hosts use the local connection: the checks are
controller-side (assert, validate_argument_spec), so nothing is installed or
joined, and a refusal must name the variable and what was expected.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def inventory(managers=("m1",), workers=("w1",), **gateway_vars):
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {
        "all": {
            "vars": gateway_vars,
            "children": {
                "swarm_managers": {"hosts": {h: local for h in managers}},
                "swarm_workers": {"hosts": {h: local for h in workers}},
            },
        }
    }


def preflight(tmp_path, inv, cached_facts=None):
    """Run the preflight play. cached_facts ({host: {fact: value}}) reach it as a
    fleet's facts do when fact caching is on: an earlier run caches them
    (set_fact cacheable, into Ansible's jsonfile cache) and preflight reads them."""
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if cached_facts:
        env.update(ANSIBLE_CACHE_PLUGIN="ansible.builtin.jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"),
                   ANSIBLE_CACHE_PLUGIN_TIMEOUT="0")
        seed = tmp_path / "seed-facts.yml"
        seed.write_text(yaml.safe_dump([
            {"name": "Cache facts", "hosts": host, "gather_facts": False,
             "tasks": [{"ansible.builtin.set_fact": dict(facts, cacheable=True)}]}
            for host, facts in cached_facts.items()]), encoding="utf-8")
        subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(path), str(seed)], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=60)
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(path), str(ROOT / "playbooks" / "preflight.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


@pytest.mark.parametrize("extra", [{"gateway_public_url": "http://127.0.0.1:8000"}, {"gateway_tls_none_accepted": True}],
                         ids=["on-loopback", "accepted"])
def test_plain_http_logins_pass_on_loopback_or_when_accepted(tmp_path, extra):
    rc, out = preflight(tmp_path, inventory(gateway_tls="none", gateway_auth="users", gateway_users=["alice"], **extra))
    assert rc == 0, out


def test_a_valid_inventory_passes(tmp_path):
    rc, out = preflight(tmp_path, inventory(gateway_auth="users", gateway_users=["alice", "bob"], gateway_admins=["alice"]))
    assert rc == 0, out


@pytest.mark.parametrize("example", ["servers", "raspberrypi"])
def test_the_example_inventories_settings_pass(tmp_path, example):
    """The sizes and settings the example inventories suggest are valid input."""
    settings = yaml.safe_load((ROOT / "inventories" / "example" / example / "group_vars" / "all.yml").read_text())
    rc, out = preflight(tmp_path, inventory(**settings))
    assert rc == 0, out


@pytest.mark.parametrize(
    "inv, expected",
    [
        (inventory(managers=("m1", "m2")),
         "The inventory group swarm_managers must hold an odd number of hosts (1, 3, 5 ...) so that the managers "
         "keep a Raft quorum, and no host may also be in swarm_workers. It holds 2 (m1, m2); in both groups: none."),
        (inventory(managers=("m1",), workers=("m1", "w1")),
         "It holds 1 (m1); in both groups: m1."),
        (inventory(gateway_port="eighty"),
         "Validation of arguments failed: argument 'gateway_port' is of type str and we were unable to convert to int"),
        (inventory(gateway_tls="yes"),
         "value of gateway_tls must be one of: none, provided, self_signed, got: yes"),
        (inventory(gateway_auth="users"),
         "gateway_auth: users needs gateway_users, a list of distinct user names"),
        (inventory(gateway_auth="users", gateway_users=["alice"], gateway_admins=["mallory"]),
         'gateway_users: ["alice"]; gateway_admins: ["mallory"]'),
        (inventory(gateway_auth="users", gateway_users=["al ice"]),
         'gateway_users: ["al ice"]'),
        (inventory(gateway_auth="users", gateway_users=["alice", "Alice"]),
         "names that differ only in case are one JupyterHub account, so not distinct"),
        (inventory(gateway_users=["alice"], gateway_password_rotate_users=["bob"]),
         'gateway_password_rotate_users: ["bob"]'),
        (inventory(gateway_user_limits={"bob": {"max_wrkers": 2}}),
         "gateway_user_limits maps a user name to any of max_clusters, max_workers and max_cores, each a number, "
         '0 or more (0: no limit), e.g. {bob: {max_workers: 16}}; it is {"bob": {"max_wrkers": 2}}.'),
        (inventory(gateway_user_limits={"bob": {"max_workers": -1}}),
         "each a number, 0 or more (0: no limit)"),
        (inventory(gateway_auth="users", gateway_users=["alice", "bob"], gateway_user_limits={"bbo": {"max_workers": 2}}),
         "gateway_user_limits names bbo, not in gateway_users (alice, bob): a mistyped name would limit nobody."),
        (inventory(gateway_profiles={"small": {"worker_cores": 2, "worker_memroy": "8 GiB"}}),
         'gateway_profiles.small is {"worker_cores": 2, "worker_memroy": "8 GiB"}: a worker size sets only '
         "worker_cores, worker_cores_limit, worker_memory, worker_memory_limit, with at most gateway_max_worker_cores"),
        (inventory(gateway_profiles={"big": {"worker_cores": 2, "worker_memory": "64 GiB"}}),
         'gateway_profiles.big is {"worker_cores": 2, "worker_memory": "64 GiB"}'),
        (inventory(gateway_worker_cores=16),
         'gateway_worker_cores and gateway_worker_memory is {"worker_cores": 16, "worker_memory": "2 GiB"}'),
        (inventory(gateway_worker_memory="lots"),
         'gateway_worker_cores and gateway_worker_memory is {"worker_cores": 1, "worker_memory": "lots"}'),
        (inventory(gateway_extra_config="c.Foo.bar = 1\nc.Foo.token = 'hunter2-secret'\nif True\n    pass\n"),
         "gateway_extra_config does not compile: SyntaxError: expected ':' (line 3)"),
        (inventory(gateway_tls="none", gateway_auth="users", gateway_users=["alice"],
                   gateway_public_url="http://lab.example:8000"),
         "gateway_tls: none with gateway_auth: users sends every account's password or hub token in clear to "
         "http://lab.example:8000: use gateway_tls: self_signed (the default) or provided, publish the gateway on "
         "loopback (gateway_public_url), or set gateway_tls_none_accepted: true."),
        (inventory(gateway_port=5001),
         "Two services would publish the same port on the first manager: registry_port=5000, registry_push_port=5001, "
         "gateway_port=5001. Give each its own port."),
        (inventory(jupyterhub_enabled=True, gateway_users=["alice"], jupyterhub_port=5000),
         "registry_port=5000, registry_push_port=5001, gateway_port=8000, jupyterhub_port=5000."),
        (inventory(gateway_tls="provided", gateway_tls_cert_path="/nonexistent/tls.crt", gateway_tls_key_path="/etc/hostname"),
         "gateway_tls_cert_path is /nonexistent/tls.crt, which is not a file on the controller."),
        (inventory(gateway_one_worker_per_node=True, gateway_one_worker_per_node_port=8000),
         "gateway_one_worker_per_node_port must be a port (1-65535) other than gateway_port (8000); it is 8000."),
        (inventory(gateway_orphan_sweep_period=-1),
         "gateway_unplaceable_timeout (5) and gateway_orphan_sweep_period (-1) must be seconds, 0 or more."),
        (inventory(gateway_cluster_start_timeout=0),
         "gateway_cluster_start_timeout (0) and gateway_worker_start_timeout (60) must be seconds, more than 0."),
        (inventory(gateway_scheduler_memory_limit="2GB"),
         "gateway_scheduler_memory (256M) and gateway_scheduler_memory_limit (2GB) must each be a number "
         "with a K, M, G or T suffix"),
        (inventory(gateway_scheduler_memory="256 MiB"),
         "gateway_scheduler_memory (256 MiB) and gateway_scheduler_memory_limit (2G) must each be a number"),
        (inventory(gateway_scheduler_memory="3G"),
         "gateway_scheduler_memory_limit (2G) at least gateway_scheduler_memory (3G)."),
        (inventory(gateway_node_pools=["x86", "pi"], gateway_default_node_pool="arm"),
         "gateway_default_node_pool is arm: it must be any or one of gateway_node_pools (x86, pi)."),
        (inventory(jupyterhub_enabled=True),
         "jupyterhub_enabled needs gateway_auth: jupyterhub (its default then; this inventory sets ), gateway_users"),
        (inventory(jupyterhub_enabled=True, gateway_users=["alice"], gateway_auth="users"),
         "jupyterhub_enabled needs gateway_auth: jupyterhub (its default then; this inventory sets users)"),
        (inventory(jupyterhub_enabled=True, gateway_users=["alice"], jupyterhub_notebook_memory="2 gigs"),
         'jupyterhub_notebook_memory as a size such as "2 GiB" (it is 2 gigs)'),
        (inventory(jupyterhub_enabled=True, gateway_users=["alice"], jupyterhub_cluster_grace="soon"),
         "argument 'jupyterhub_cluster_grace' is of type str and we were unable to convert to float"),
    ],
    ids=["even-managers", "host-in-both-groups", "wrong-type", "bad-choice", "users-without-users",
         "admin-not-a-user", "bad-user-name", "users-differing-in-case", "rotate-unknown-user", "bad-limit-key",
         "negative-limit", "limit-of-no-account", "profile-key-mistyped", "profile-above-max",
         "default-cores-above-max", "default-memory-malformed",
         "extra-config-not-python", "plain-http-logins-on-the-network", "gateway-on-the-registrys-port", "hub-on-the-registrys-port",
         "provided-cert-missing", "worker-slot-port-is-gateway-port", "negative-sweep-period",
         "zero-start-timeout", "scheduler-memory-in-gb", "scheduler-memory-in-mib",
         "scheduler-limit-below-reservation", "default-pool-not-offered", "hub-without-accounts",
         "hub-with-users-auth", "hub-notebook-memory", "hub-grace-not-a-number"],
)
def test_bad_input_is_refused_with_the_variable_named(tmp_path, inv, expected):
    rc, out = preflight(tmp_path, inv)
    assert_refused_before_any_change(rc, out, expected)
    assert "hunter2-secret" not in out


def assert_refused_before_any_change(rc, out, expected):
    assert rc != 0, out
    assert expected in out, out
    # Refused in preflight: no later play (and no change) was reached.
    assert "Install Docker Engine" not in out and "changed=1" not in out


def test_a_32_bit_node_is_refused_by_name_before_any_change(tmp_path):
    """A Raspberry Pi on 32-bit Raspberry Pi OS reports armv7l, for which no
    image is built: preflight names that node and says what to do."""
    assert_refused_before_any_change(
        *preflight(tmp_path, inventory(workers=("w1", "pi7")), cached_facts={"pi7": {"ansible_architecture": "armv7l"}}),
        "The Dask image is built for x86_64 and aarch64 only; these nodes are armv7l: pi7. "
        "Remove them from swarm_managers and swarm_workers (a 32-bit Raspberry Pi OS runs armv7l: "
        "install the 64-bit one)")


def test_preflight_takes_the_profile_keys_the_backend_takes():
    # Two copies of one list (the role cannot import the backend): kept equal here.
    import ast

    source = (ROOT / "backend" / "src" / "dask_gateway_swarm" / "options.py").read_text(encoding="utf-8")
    (PROFILE_KEYS,) = [ast.literal_eval(node.value) for node in ast.parse(source).body
                       if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PROFILE_KEYS"]
    role_vars = yaml.safe_load((ROOT / "roles" / "gateway" / "vars" / "main.yml").read_text(encoding="utf-8"))
    assert role_vars["__gateway_profile_keys"] == list(PROFILE_KEYS)


@pytest.mark.parametrize("prefixes", [["https://registry.lab"], ["/"], ["10.0.0.2:5000 /"]])
def test_the_gateway_role_refuses_an_image_prefix_that_names_no_registry_first(tmp_path, prefixes):
    # In the role, not in preflight: a prefix may name the registry by a fact
    # of the registry play (registry_pull_address), set after preflight.
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump(inventory(gateway_allowed_image_prefixes=prefixes)), encoding="utf-8")
    play = tmp_path / "gateway.yml"
    play.write_text(yaml.safe_dump([{"name": "The gateway role", "hosts": "swarm_managers[0]", "gather_facts": False,
                                     "roles": ["dask_swarm.gateway.gateway"]}]), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inv), str(play)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out
    assert ("gateway_allowed_image_prefixes holds registries, namespaces or repositories such as 10.0.0.2:5000 or "
            f"10.0.0.2:5000/lab/ (no scheme, no spaces, not empty); it is {json.dumps(prefixes)}.") in out, out
    assert "changed=1" not in out and "Read the image the gateway runs now" not in out, out


def test_a_prefix_naming_the_registry_by_its_later_fact_passes_preflight(tmp_path):
    # As the default Molecule scenario writes it: registry_pull_address is set by the registry play.
    rc, out = preflight(tmp_path, inventory(gateway_allowed_image_prefixes=["{{ registry_pull_address | default('') }}/"]))
    assert rc == 0, out
