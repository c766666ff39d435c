"""The controller's, the client's and the image's locks: one resolution, no drift.

The locks are made by `make lock` (scripts/lock.py). These tests run offline:
they read the locks and their inputs, and the Python environment running them
(which `make setup` installs from requirements.txt).
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)

FILES = [f for entry in lock.LOCKS for f in (entry.source, entry.output)]


def pins(name):
    return lock.parse((ROOT / lock.BY_NAME[name].output).read_text())


@pytest.fixture
def copy(tmp_path):
    """A copy of the inputs and locks, to edit."""
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_the_locks_are_current_unedited_and_agree():
    assert lock.check_locks() == []


@pytest.mark.parametrize("other", ["controller", "client", "notebook"])
def test_every_package_shared_with_the_image_has_the_image_version(other):
    image, theirs = pins("image"), pins(other)
    shared = sorted(set(image) & set(theirs))
    assert {"dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado", "packaging", "pyyaml"} <= set(shared)
    assert [(n, theirs[n].version, image[n].version) for n in shared if theirs[n].version != image[n].version] == []


def test_the_client_lock_holds_what_a_client_needs_at_the_image_versions():
    image, client = pins("image"), pins("client")
    for name in ("dask-gateway", "dask", "distributed", "numpy", "pandas", "bokeh"):
        assert name in client, name
        assert client[name].version == image[name].version, name
    # Nothing server-side or controller-side leaks into a laptop's install.
    assert not {"dask-gateway-server", "ansible-core", "molecule", "docker", "uv"} & set(client)


def test_the_notebook_image_holds_the_whole_image_and_the_notebook_packages():
    image, notebook, controller = pins("image"), pins("notebook"), pins("controller")
    assert set(image) <= set(notebook)
    for name in ("jupyterhub", "jupyterlab", "dask-labextension", "dockerspawner", "configurable-http-proxy", "ipykernel"):
        assert name in notebook, name
    # The tests' hub is the image's hub.
    for name in ("jupyterhub", "dockerspawner", "configurable-http-proxy"):
        assert controller[name].version == notebook[name].version, name


@pytest.mark.parametrize("name", ["image", "notebook", "client", "controller"])
def test_every_pin_carries_hashes(name):
    entries = pins(name)
    assert len(entries) > 20
    assert [n for n, pin in entries.items() if not pin.hashes] == []


def test_a_pin_changed_by_hand_is_caught(copy):
    path = copy / "image/requirements.txt"
    text = path.read_text()
    version = pins("image")["cloudpickle"].version
    path.write_text(text.replace("cloudpickle==%s" % version, "cloudpickle==0.0.1"))
    problems = lock.check_locks(copy)
    assert any("image/requirements.txt was edited by hand" in p for p in problems), problems
    assert any(p.startswith("cloudpickle differs: 0.0.1 in image/requirements.txt") for p in problems), problems


def test_a_changed_input_makes_every_lock_stale(copy):
    path = copy / "client/requirements.in"
    path.write_text(path.read_text() + "scipy\n")
    problems = lock.check_locks(copy)
    for entry in lock.LOCKS:
        assert any(p.startswith("%s is stale" % entry.output) for p in problems), problems
    assert "client/requirements.txt does not pin scipy, which client/requirements.in asks for; run `make lock`" in problems


def test_a_pin_outside_its_input_specifier_is_caught(copy):
    path = copy / "image/requirements.in"
    path.write_text(path.read_text().replace("dask==2026.8.0", "dask==2026.7.0"))
    assert "image/requirements.txt pins dask==2026.8.0, but image/requirements.in asks for dask==2026.7.0; " \
        "run `make lock`" in lock.check_locks(copy)


def test_this_environment_is_exactly_the_controller_lock():
    assert lock.check_env() == []
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
