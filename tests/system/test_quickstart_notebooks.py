"""The README's "Notebooks for the whole lab", run on the quick start's
sandbox after test_quickstart.py: `make demo JUPYTERHUB=1` (read from the
README, not retyped here) turns the hub on, and a real browser uses it.

- Debian's chromium, driven by Selenium through Debian's chromium-driver,
  trusts the sandbox's CA as a lab's browsers would (an NSS database made
  with certutil), logs in to the hub with alice's generated password,
  starts her server, opens a notebook and runs a cell that calls
  `Gateway().new_cluster()` with no arguments, scales it to 2 and computes;
  then it opens the cluster's dashboard link. Screenshots of both are kept
  in tests/output/notebooks/.
- Through the hub's REST API (as alice, an admin), a second user is made;
  that user's token does not list or reach alice's cluster.
- Nothing of a password, the hub's tokens or the users' tokens shows in
  any output, service log or `docker service inspect`.
- Stopping alice's server stops her clusters after the grace period
  (jupyterhub_cluster_grace, 30 s in the sandbox), not before, and not
  at all when her server starts again within it; carol's cluster, which
  alice's admin list holds too, keeps running.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from conftest import OUTPUT, ROOT, SANDBOX_INVENTORY, readme_section, recap, run
from testsecret import Secret

HUB = "https://127.0.0.1:8001"
GATEWAY = "https://127.0.0.1:8000"
MANAGER = "dask-swarm-sandbox-manager1"
ARTEFACTS = OUTPUT.parent / "notebooks"
USER_LABEL = "dask-gateway-swarm.user"
# Typed into a new notebook's first cell: top-level lines only, so that the
# editor's automatic indentation leaves them as they are.
CELL = """from dask_gateway import Gateway
gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=240)
futures = client.map(lambda x: x * x, range(100))
print("sum of squares:", client.submit(sum, futures).result())
print("dashboard:", cluster.dashboard_link)"""


def notebooks_command() -> str:
    """The one command of the README's notebooks section."""
    block = re.search(r"```console\n(.*?)```", readme_section("Notebooks for the whole lab"), re.S)
    assert block, "the README's notebooks section has no console block"
    (command,) = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]
    return command


def on_manager(*argv: str) -> str:
    return subprocess.run(["docker", "exec", MANAGER, *argv], capture_output=True, text=True, check=True, timeout=120).stdout


def container_log(service: str) -> str:
    """The whole log of a service's running container, read on its node
    (`docker service logs` of a service with many past tasks can stall)."""
    node = on_manager("docker", "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}",
                      service).split()[0]
    container = f"dask-swarm-{node}"  # the sandbox names its node containers after their hostnames
    (task,) = subprocess.run(["docker", "exec", container, "docker", "ps", "-q", "--filter",
                              f"label=com.docker.swarm.service.name={service}"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.split()
    logs = subprocess.run(["docker", "exec", container, "docker", "logs", task], capture_output=True, text=True,
                          timeout=120, check=True)
    return logs.stdout + logs.stderr


def wait_for(predicate, timeout: float, message: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def hub_demo(demo):
    assert demo.returncode == 0, "make demo failed; see test_quickstart"
    result = run(notebooks_command(), "demo-jupyterhub.log")
    assert result.returncode == 0, result.stdout[-5000:]
    return result


@pytest.fixture(scope="module")
def accounts(password_file: Path) -> dict[str, str]:
    """The sandbox's users and their generated passwords, from their 0600 files."""
    group_vars = yaml.safe_load((SANDBOX_INVENTORY / "group_vars" / "all.yml").read_text(encoding="utf-8"))
    found = {}
    directory = Path(os.path.expanduser(group_vars["gateway_user_password_dir"]))
    assert directory.stat().st_mode & 0o777 == 0o700, directory
    for user in group_vars["gateway_users"]:
        path = directory / f"{user}.password"
        assert path.stat().st_mode & 0o777 == 0o600, path
        found[user] = Secret(path.read_text(encoding="utf-8").strip())
    return found


@pytest.fixture(scope="module")
def hub_session(hub_demo, accounts: dict[str, str], ca_file: Path) -> requests.Session:
    """alice, logged in to the hub's login form, as a browser would be."""
    session = requests.Session()
    # REQUESTS_CA_BUNDLE would win over session.verify.
    session.trust_env = False
    session.verify = str(ca_file)
    session.get(f"{HUB}/hub/login", timeout=30).raise_for_status()
    xsrf = session.cookies.get("_xsrf")
    resp = session.post(f"{HUB}/hub/login", data={"username": "alice", "password": accounts["alice"], "_xsrf": xsrf},
                        allow_redirects=False, timeout=60)
    assert resp.status_code == 302, (resp.status_code, resp.text[:500])
    # The XSRF token is bound to the session the login started: a page of the
    # hub's sets the new one, which the REST API then wants in a header.
    session.get(f"{HUB}/hub/token", timeout=30).raise_for_status()
    session.headers["X-XSRFToken"] = session.cookies.get("_xsrf", path="/hub/")
    return session


@pytest.fixture(scope="module")
def tokens(hub_session: requests.Session) -> dict[str, str]:
    """API tokens of alice (an admin), asked for in her logged-in session, and
    of carol, a user she makes through the hub's REST API."""
    def api(method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return hub_session.request(method, f"{HUB}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    body = {"note": "notebook test", "expires_in": 3600}
    resp = api("POST", "/users/alice/tokens", json=body)
    assert resp.status_code == 201, (resp.status_code, resp.text[:500])
    alice = resp.json()["token"]
    made = api("POST", "/users/carol", alice)
    assert made.status_code == 201, (made.status_code, made.text[:500])
    resp = api("POST", "/users/carol/tokens", alice, json=body)
    assert resp.status_code == 201, (resp.status_code, resp.text[:500])
    return {"alice": Secret(alice), "carol": Secret(resp.json()["token"])}


@pytest.fixture(scope="module")
def browser(hub_demo, ca_file: Path, tmp_path_factory):
    """Headless chromium that trusts the sandbox's CA (its own NSS database)."""
    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "dask-swarm sandbox CA", "-t", "C,,", "-i", str(ca_file)],
                   check=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    service = Service("/usr/bin/chromedriver", log_output=str(ARTEFACTS / "chromedriver.log"),
                      env=dict(os.environ, HOME=str(home)))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_rerun_with_the_hub_changes_nothing(hub_demo, accounts: dict[str, str]) -> None:
    assert "JupyterHub: https://127.0.0.1:8001" in hub_demo.stdout
    assert "Log in as:  alice, bob (admins: alice)" in hub_demo.stdout
    rerun = run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml", "-i", str(SANDBOX_INVENTORY)],
                "site-jupyterhub-rerun.log")
    assert rerun.returncode == 0, rerun.stdout[-5000:]
    hosts = recap(rerun.stdout)
    assert hosts and all(counts == (0, 0, 0) for counts in hosts.values()), f"the rerun changed something: {hosts}"
    for password in accounts.values():
        assert password not in rerun.stdout


def test_a_user_logs_in_and_computes_from_a_notebook_with_no_configuration(
    browser, accounts: dict[str, str], request
) -> None:
    wait = WebDriverWait(browser, 240)
    browser.get(f"{HUB}/hub/login")
    browser.find_element(By.ID, "username_input").send_keys("alice")
    browser.find_element(By.ID, "password_input").send_keys(accounts["alice"])
    browser.find_element(By.ID, "login_submit").click()
    # The hub starts her server and sends her to JupyterLab.
    wait.until(ec.url_contains("/user/alice/lab"))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    # A new workspace, whatever an earlier session left open: JupyterLab's
    # launcher. Once it never showed within 240 s of a load; a user reloads.
    launcher = (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]')
    for attempt in range(1, 4):
        browser.get(f"{HUB}/user/alice/lab?reset")
        try:
            WebDriverWait(browser, 90).until(ec.element_to_be_clickable(launcher)).click()
            break
        except TimeoutException:
            browser.save_screenshot(str(ARTEFACTS / f"no-launcher-{attempt}.png"))
            print(f"JupyterLab showed no launcher within 90 s (load {attempt}); loading it again")
    else:
        raise AssertionError("JupyterLab showed no launcher in 3 loads; see tests/output/notebooks/no-launcher-*.png")
    editor = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")))
    # Her new kernel connected and idle first: a cell run while JupyterLab
    # still connects to it was once never sent (the kernel stayed idle, the
    # cell unrun, until the test's time ran out).
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]')))
    editor.click()
    editor.send_keys(CELL)
    editor.send_keys(Keys.CONTROL, Keys.ENTER)
    prompt = (By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt")
    try:
        WebDriverWait(browser, 30).until(lambda d: d.find_element(*prompt).text.strip() != "[ ]:")
    except TimeoutException:
        # Still not queued (as a user would, run it again; said in the output).
        print("the cell's first run was not sent; running it again")
        editor.send_keys(Keys.CONTROL, Keys.ENTER)
    try:
        output = WebDriverWait(browser, 420).until(
            lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                            if "dashboard:" in e.text or "Error" in e.text), None),
            message="the cell's output",
        )
    except TimeoutException:
        # What the user would have seen: the kernel's state, a half-run cell.
        browser.save_screenshot(str(ARTEFACTS / "notebook-timeout.png"))
        raise
    browser.save_screenshot(str(ARTEFACTS / "notebook.png"))
    assert f"sum of squares: {sum(x * x for x in range(100))}" in output, output
    link = re.search(r"dashboard: (\S+)", output).group(1)
    assert link.startswith(f"{GATEWAY}/clusters/"), link
    request.config.cache.set("notebooks/cluster", link.rstrip("/").split("/")[-2])

    # The dashboard link opens through the gateway's proxy in the browser.
    browser.get(link)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".bk-Figure, .bk-Canvas, .bk-root, .bk"))
    time.sleep(3)  # let the plots draw before the screenshot
    assert "Dask" in browser.title, browser.title
    browser.save_screenshot(str(ARTEFACTS / "dashboard.png"))


@pytest.fixture(scope="module")
def alice_cluster(request) -> str:
    name = request.config.cache.get("notebooks/cluster", None)
    assert name, "the notebook made no cluster; see the browser test"
    return name


def test_another_user_cannot_see_or_reach_her_cluster(client, tokens: dict[str, str], alice_cluster: str) -> None:
    helpers, dask_gateway = client
    call, close_gateway = helpers.call, helpers.close_gateway
    services = on_manager("docker", "service", "ls", "-q", "--filter", f"label={USER_LABEL}=alice").split()
    assert services, "no Swarm service of alice's cluster"
    gateways = {user: dask_gateway.Gateway(GATEWAY, auth=dask_gateway.JupyterHubAuth(api_token=token))
                for user, token in tokens.items()}
    try:
        assert alice_cluster in {c.name for c in call(gateways["alice"].list_clusters)}
        assert {c.name for c in call(gateways["carol"].list_clusters)} == set()
        with pytest.raises(Exception) as refused:
            call(lambda: gateways["carol"].connect(alice_cluster), timeout=60)
        assert getattr(refused.value, "status", None) == 403, refused.value
        gc.collect()
    finally:
        for gateway in gateways.values():
            close_gateway(gateway)


def test_no_secret_shows_in_output_logs_or_service_specs(hub_demo, accounts: dict[str, str], tokens: dict[str, str]) -> None:
    secrets = {
        **{f"{user}'s password": password for user, password in accounts.items()},
        **{f"{user}'s API token": token for user, token in tokens.items()},
        "the gateway's hub token": on_manager("cat", "/etc/dask_swarm_gateway/jupyterhub_token").strip(),
        "the verify token": on_manager("cat", "/etc/dask_swarm_gateway/jupyterhub/verify_token").strip(),
        "the cookie secret": on_manager("cat", "/etc/dask_swarm_gateway/jupyterhub/cookie_secret").strip(),
    }
    assert all(len(value) >= 32 for value in secrets.values())
    services = on_manager("docker", "service", "ls", "--format", "{{.Name}}").split()
    notebook = [s for s in services if s.startswith("jupyterhub-notebook-")]
    assert notebook == ["jupyterhub-notebook-alice"], services
    # Her server's token reached it as a Swarm secret: a file, not its environment.
    spec = json.loads(on_manager("docker", "service", "inspect", notebook[0]))[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert [s["File"]["Name"] for s in spec.get("Secrets", [])] == ["jupyterhub-api-token"], spec.get("Secrets")
    assert not [e for e in spec.get("Env", []) if e.startswith(("JUPYTERHUB_API_TOKEN=", "JPY_API_TOKEN="))]
    texts = {
        "make demo JUPYTERHUB=1": hub_demo.stdout,
        "docker service inspect": on_manager("docker", "service", "inspect", *services),
    }
    for service in ("jupyterhub_hub", "dask-gateway_gateway", notebook[0]):
        texts[f"the log of {service}"] = container_log(service)
    for where, text in texts.items():
        for what, value in secrets.items():
            assert value not in text, f"{what} shows in {where}"


def test_stopping_her_server_stops_her_clusters_only_after_the_grace_period(client, hub_session: requests.Session,
                                                                          tokens: dict[str, str]) -> None:
    """A cluster she started and left running (shutdown_on_close=False, as a
    culled kernel leaves one) survives her server's stop when the server
    starts again within the grace period; after a stop that lasts, it stops
    once the grace period is over, and not before. She is an admin, whose
    cluster list holds everyone's: carol's cluster keeps running."""
    helpers, dask_gateway = client
    call, close_cluster, close_gateway = helpers.call, helpers.close_cluster, helpers.close_gateway
    grace = yaml.safe_load((SANDBOX_INVENTORY / "group_vars" / "all.yml").read_text(encoding="utf-8"))[
        "jupyterhub_cluster_grace"]
    headers = {"Authorization": f"token {tokens['alice']}"}

    def server(method: str) -> None:
        resp = requests.request(method, f"{HUB}/hub/api/users/alice/server", headers=headers,
                                verify=hub_session.verify, timeout=60)
        assert resp.status_code in (201, 202, 204), (method, resp.status_code, resp.text[:500])

    def ready() -> bool:
        resp = requests.get(f"{HUB}/hub/api/users/alice", headers=headers, verify=hub_session.verify, timeout=30)
        return bool(resp.json()["servers"].get("", {}).get("ready"))

    def notebook_service_gone() -> bool:
        return "jupyterhub-notebook-alice" not in on_manager("docker", "service", "ls", "--format", "{{.Name}}")

    def her_services() -> list[str]:
        return on_manager("docker", "service", "ls", "-q", "--filter", f"label={USER_LABEL}=alice").split()

    def left_running(user: str) -> str:
        gateway = dask_gateway.Gateway(GATEWAY, auth=dask_gateway.JupyterHubAuth(api_token=tokens[user]))
        try:
            cluster = call(gateway.new_cluster, worker_cores=0.5, worker_memory="1 GiB", shutdown_on_close=False,
                           timeout=180)
            close_cluster(cluster)
            return cluster.name
        finally:
            close_gateway(gateway)

    def stops_logged() -> int:
        return container_log("jupyterhub_hub").count("Dask cluster(s) of alice")

    name, carols = left_running("alice"), left_running("carol")

    def running(cluster: str = name) -> bool:
        return bool(on_manager("docker", "service", "ls", "-q", "--filter",
                               f"label=dask-gateway-swarm.cluster={cluster}"))

    # Stopped, and started again (under the same service name) within the grace period: the cluster stays.
    server("DELETE")
    wait_for(notebook_service_gone, 60, "alice's notebook service to go")
    server("POST")
    wait_for(ready, 300, "alice's server to start again")
    time.sleep(grace + 5)
    assert running(), "her cluster stopped although her server started again within the grace period"

    # Stopped for good: within the grace period the cluster keeps running...
    logged = stops_logged()
    server("DELETE")
    stopped = time.monotonic()
    wait_for(notebook_service_gone, 60, "alice's notebook service to go")
    seen = time.monotonic() - stopped
    assert seen < grace, f"her server took {seen:.0f} s to stop, longer than the grace period: nothing to conclude"
    assert running(), f"her cluster stopped {seen:.0f} s after her server, within the grace period of {grace} s"
    # ... and after it, it stops, with all her clusters.
    wait_for(lambda: not her_services(), grace + 60, "alice's clusters to stop after the grace period")
    elapsed = time.monotonic() - stopped
    print(f"alice's clusters were gone {elapsed:.1f} s after her server stopped (grace {grace} s)")
    assert elapsed >= grace - 1
    # Her clean-up is over (logged), and carol's cluster runs on.
    wait_for(lambda: stops_logged() > logged, 60, "the hub to log the clean-up of alice's clusters")
    stopped_names = re.findall(r"Stopped \d+ Dask cluster\(s\) of alice: (.*)", container_log("jupyterhub_hub"))[-1]
    assert name in stopped_names and carols not in stopped_names, stopped_names
    assert running(carols), "alice's clean-up stopped carol's cluster (an admin's list holds everyone's)"
    gateway = dask_gateway.Gateway(GATEWAY, auth=dask_gateway.JupyterHubAuth(api_token=tokens["carol"]))
    try:
        call(gateway.stop_cluster, carols)
    finally:
        close_gateway(gateway)
    # No token secret of her server is left behind.
    assert not on_manager("docker", "secret", "ls", "-q", "--filter", "label=dask_swarm.gateway.notebook-token")


def test_turning_the_hub_off_removes_it_and_its_servers(hub_session: requests.Session, tokens: dict[str, str],
                                                        accounts: dict[str, str]) -> None:
    """jupyterhub_enabled: false on a fleet that had the hub removes its stack
    and the users' notebook servers (bob's, started by alice, an admin),
    before the gateway drops the secrets they shared (Swarm refuses to
    remove a secret in use)."""
    headers = {"Authorization": f"token {tokens['alice']}"}
    resp = requests.post(f"{HUB}/hub/api/users/bob/server", headers=headers, verify=hub_session.verify, timeout=60)
    assert resp.status_code in (201, 202), (resp.status_code, resp.text[:500])
    wait_for(lambda: requests.get(f"{HUB}/hub/api/users/bob", headers=headers, verify=hub_session.verify, timeout=30)
             .json()["servers"].get("", {}).get("ready"), 300, "bob's server to start")
    off = run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml", "-i", str(SANDBOX_INVENTORY),
               "--tags", "gateway", "-e", "jupyterhub_enabled=false"], "site-jupyterhub-off.log")
    assert off.returncode == 0, off.stdout[-5000:]
    assert not on_manager("docker", "service", "ls", "-q", "--filter", "label=dask_swarm.gateway.stack=jupyterhub")
    assert not on_manager("docker", "secret", "ls", "-q", "--filter", "name=dask-gateway_jupyterhub_token")
    for password in accounts.values():
        assert password not in off.stdout
