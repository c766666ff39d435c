"""The sandbox fleet the system tests share: `make demo` as the README's
quick start writes it, made once for the session and removed by the
README's teardown at its end. test_quickstart.py runs on it first, as the
quick start leaves it; test_quickstart_notebooks.py then turns its hub on
(`make demo JUPYTERHUB=1`), as the README's notebooks section does.

The fixture makes its own sandbox: it fails, and touches nothing, when one
is running already.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The client helpers of the backend's integration tests: a timeout on every
# blocking call, and Gateway/cluster objects closed exactly once. They import
# dask_gateway, and aiohttp reads SSL_CERT_FILE at that import: the `client`
# fixture imports them once the sandbox's CA exists, as a user would.
sys.path.insert(0, str(ROOT / "backend" / "tests" / "integration"))

BIN = Path(sys.executable).parent
OUTPUT = ROOT / "tests" / "output" / "quickstart"
FLEET_LABEL = "dask_swarm.gateway.fleet=dask-swarm-sandbox"
SANDBOX_INVENTORY = ROOT / "inventories" / "sandbox"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def quickstart_commands() -> list[str]:
    """The commands of the README's quick-start console block, comments cut."""
    block = re.search(r"```console\n(.*?)```", readme_section("Quick start"), re.S)
    assert block, "the README's quick start has no console block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def run(command: str | list[str], log: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 1800):
    """Run a command as a user would, its output kept in tests/output/quickstart."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        command,
        shell=isinstance(command, str),
        cwd=cwd,
        env=env or os.environ.copy(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    (OUTPUT / log).write_text(proc.stdout, encoding="utf-8")
    return proc


def sandbox_objects() -> list[str]:
    found = []
    for kind in ("ps -a", "volume ls", "network ls"):
        out = subprocess.run(
            f"docker {kind} -q --filter label={FLEET_LABEL}", shell=True, capture_output=True, text=True, check=True
        ).stdout
        found += out.split()
    return found


def recap(output: str) -> dict[str, tuple[int, int, int]]:
    return {host: (int(changed), int(unreachable), int(failed)) for host, changed, unreachable, failed in RECAP.findall(output)}


@pytest.fixture(scope="session")
def commands() -> list[str]:
    commands = quickstart_commands()
    assert len(commands) == 2, f"the quick start should be two commands, it is {commands}"
    assert "make test" in commands, "the quick start's test command is not `make test`"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec make test$", ci, re.M), ".ci/run does not run the README's test command"
    return commands


@pytest.fixture(scope="session")
def demo(commands: list[str]):
    """`make demo` as the README writes it; the README's teardown afterwards."""
    assert not sandbox_objects(), "a sandbox fleet is running: `make demo-down` first (this test makes its own)"
    teardown = re.search(r"`(make demo-down)`", readme_section("Quick start"))
    assert teardown, "the README's quick start does not say how to remove the sandbox (make demo-down)"
    (demo_command,) = [c for c in commands if c != "make test"]
    try:
        yield run(demo_command, "demo.log")
    finally:
        down = run(teardown.group(1), "demo-down.log", timeout=600)
        assert down.returncode == 0, down.stdout[-3000:]
        assert not sandbox_objects(), "the sandbox's teardown left containers, volumes or networks"
        assert not (SANDBOX_INVENTORY / "hosts.yml").exists(), "the sandbox's teardown left its inventory"


@pytest.fixture(scope="session")
def password_file() -> Path:
    import yaml

    group_vars = yaml.safe_load((SANDBOX_INVENTORY / "group_vars" / "all.yml").read_text(encoding="utf-8"))
    return Path(os.path.expanduser(group_vars["gateway_password_file"]))


@pytest.fixture(scope="session")
def ca_file(demo) -> Path:
    """The sandbox's CA certificate, as make demo names it."""
    match = re.search(r"^  CA:        (\S+) ", demo.stdout, re.M)
    assert match, "make demo named no CA file (the sandbox serves HTTPS by default)"
    return Path(match.group(1))


@pytest.fixture(scope="session")
def client(ca_file: Path):
    """dask_gateway and the client helpers, imported with the sandbox's CA trusted."""
    assert "aiohttp" not in sys.modules, "aiohttp was imported before SSL_CERT_FILE was set"
    os.environ["SSL_CERT_FILE"] = str(ca_file)
    import clienthelpers
    import dask_gateway

    return clienthelpers, dask_gateway
