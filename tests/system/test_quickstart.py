"""The README's quick start run as written, then the built collection
installed into an empty collections path and run by FQCN on the same fleet.

`make demo` (read from the README's "Quick start" block, not retyped here)
makes the sandbox fleet and prints a Python snippet, which is run as it is
printed. Then `ansible-galaxy collection build` makes the tarball, which is
installed with no clone on the collections path, and
`ansible-playbook dask_swarm.gateway.site` runs from an empty directory
against a copy of the sandbox's inventory: a second run on a formed fleet,
so it must change nothing. Last, the README's teardown command must leave
nothing of the sandbox behind.

This test makes its own sandbox: it fails, and touches nothing, when one is
running already.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import BIN, OUTPUT, ROOT, SANDBOX_INVENTORY, recap, run

SNIPPET = re.compile(r"^# --- snippet ---\n(.*?)^# --- end of snippet ---$", re.S | re.M)


def test_demo_forms_the_fleet_and_prints_how_to_connect(demo, password_file: Path, ca_file: Path) -> None:
    assert demo.returncode == 0, demo.stdout[-5000:]
    hosts = recap(demo.stdout)
    assert {"manager1", "worker1", "worker2"} <= set(hosts), hosts
    assert all(unreachable == failed == 0 for _, unreachable, failed in hosts.values()), hosts
    assert "Gateway:   https://127.0.0.1:8000" in demo.stdout
    assert f"Password:  in {password_file} (mode 0600)" in demo.stdout
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert ca_file.read_text(encoding="utf-8").startswith("-----BEGIN CERTIFICATE-----")
    assert f'os.environ["SSL_CERT_FILE"] = "{ca_file}"' in demo.stdout


def test_yamllint_passes_while_the_sandbox_runs(demo) -> None:
    # The sandbox writes its inventory into the checkout; `make lint` beside a
    # running `make demo` (or beside this stage, in the suite's other lane)
    # once failed on it.
    assert (SANDBOX_INVENTORY / "hosts.yml").exists(), "the sandbox wrote no inventory"
    lint = subprocess.run([str(BIN / "yamllint"), "-s", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout[-3000:]


def test_the_gateway_speaks_https_only_with_a_certificate_from_the_ca(demo, ca_file: Path) -> None:
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen("https://127.0.0.1:8000/api/health", context=context, timeout=10) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen("https://127.0.0.1:8000/api/health", context=ssl.create_default_context(), timeout=10)
    # Plain HTTP to the same port gets no API answer: no status line, or an error page, never JSON.
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/api/health", timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        body, status = str(exc).encode(), None
    assert status != 200 and b'"status"' not in body, (status, body[:200])


def test_printed_snippet_computes_on_the_sandbox(demo) -> None:
    snippet = SNIPPET.search(demo.stdout)
    assert snippet, "make demo printed no Python snippet"
    result = run([str(BIN / "python"), "-c", snippet.group(1)], "snippet.log", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"sum of squares: {sum(x * x for x in range(100))}" in result.stdout
    workers = re.search(r"^workers: (\[.*\])$", result.stdout, re.M)
    assert workers and len(ast.literal_eval(workers.group(1))) == 2, result.stdout


def test_password_never_printed(demo, password_file: Path) -> None:
    password = password_file.read_text(encoding="utf-8").strip()
    assert len(password) >= 43
    assert password not in demo.stdout


@pytest.fixture(scope="module")
def installed(demo, tmp_path_factory) -> dict:
    """The collection built from this checkout and installed with no clone on the path."""
    assert demo.returncode == 0, "make demo failed; see the first test"
    tmp_path = tmp_path_factory.mktemp("galaxy")
    build = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path)], "build.log")
    assert build.returncode == 0, build.stdout
    (tarball,) = tmp_path.glob("dask_swarm-gateway-*.tar.gz")
    # No clone anywhere: an empty working directory (so no ansible.cfg), an
    # empty collections path that only the tarball fills, and a copy of the
    # sandbox's inventory. community.docker comes from the `ansible` package.
    collections = tmp_path / "collections"
    workdir = tmp_path / "user"
    workdir.mkdir()
    shutil.copytree(SANDBOX_INVENTORY, workdir / "inventory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{env['PATH']}")
    install = run(
        ["ansible-galaxy", "collection", "install", "--no-deps", "-p", str(collections), str(tarball)],
        "install.log",
        cwd=workdir,
        env=env,
    )
    assert install.returncode == 0, install.stdout
    return {"tarball": tarball, "collections": collections, "workdir": workdir, "env": env}


def playbook(installed: dict, name: str, log: str, *args: str):
    return run(
        ["ansible-playbook", name, "-i", str(installed["workdir"] / "inventory"), *args],
        log,
        cwd=installed["workdir"],
        env=installed["env"],
    )


def test_built_collection_installs_and_runs_by_fqcn(installed: dict, password_file: Path) -> None:
    with tarfile.open(installed["tarball"]) as tar:
        members = tar.getnames()
    assert "image/build.sh" in members and "roles/gateway/tasks/main.yml" in members
    unwanted = [m for m in members if re.search(r"(^|/)(\.venv|\.cache|\.git|\.collections|__pycache__|tests/output)(/|$)|^inventories/sandbox/hosts\.yml$", m)]
    assert not unwanted, f"the tarball holds build or test leftovers: {unwanted[:10]}"

    listed = run(["ansible-galaxy", "collection", "list", "--format", "json"], "list.log", cwd=installed["workdir"], env=installed["env"])
    paths = {path for path, found in json.loads(listed.stdout).items() if "dask_swarm.gateway" in found}
    assert paths == {str(installed["collections"] / "ansible_collections")}, f"dask_swarm.gateway resolves from {paths}"

    site = playbook(installed, "dask_swarm.gateway.site", "installed-site.log")
    assert site.returncode == 0, site.stdout[-5000:]
    hosts = recap(site.stdout)
    assert {"manager1", "worker1", "worker2"} <= set(hosts), hosts
    assert all(counts == (0, 0, 0) for counts in hosts.values()), f"the rerun changed something: {hosts}"
    assert password_file.read_text(encoding="utf-8").strip() not in site.stdout


def gateway_configs() -> str:
    """The Swarm configs the sandbox's gateway service mounts (they carry its configuration)."""
    return subprocess.run(
        ["docker", "exec", "dask-swarm-sandbox-manager1", "docker", "service", "inspect",
         "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Configs}}", "dask-gateway_gateway"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()


def test_changed_config_rolls_the_gateway_and_keeps_running_clusters(installed: dict, password_file: Path, client) -> None:
    """A rerun with a changed gateway variable rolls the gateway service; a
    cluster running meanwhile is still there and computes afterwards."""
    helpers, dask_gateway = client
    call, close_cluster, close_gateway = helpers.call, helpers.close_cluster, helpers.close_gateway
    connect_and_compute, wait_for = helpers.connect_and_compute, helpers.wait_for
    password = password_file.read_text(encoding="utf-8").strip()
    before = gateway_configs()
    gateway = dask_gateway.Gateway("https://127.0.0.1:8000", auth=dask_gateway.BasicAuth("rollout-test", password))
    try:
        cluster = call(gateway.new_cluster, worker_cores=0.5, worker_memory="1 GiB", shutdown_on_close=False, timeout=120)
        name = cluster.name
        close_cluster(cluster)
        rerun = playbook(installed, "dask_swarm.gateway.gateway", "installed-gateway-changed.log", "-e", "gateway_idle_timeout=1801")
        assert rerun.returncode == 0, rerun.stdout[-5000:]
        assert recap(rerun.stdout)["manager1"][0] > 0, "the changed variable changed nothing"
        assert gateway_configs() != before, "the gateway service still mounts the old configuration"
        assert password not in rerun.stdout

        connect_and_compute(gateway, name)
        wait_for(lambda: name not in [c.name for c in call(gateway.list_clusters)], 60, message=f"{name} to stop")
    finally:
        close_gateway(gateway)
