"""registry_manifest_list and registry_image_info against REAL Docker Distribution registries.

Two ``docker-registry`` processes (Debian's package, no Docker engine) share
one storage directory, as the collection deploys them: one with htpasswd auth
for pushes, one read-only and anonymous for pulls. Both serve HTTPS with a
certificate from a CA made by the test. Synthetic images (one layer, a config
naming the platform) are uploaded through the registry API by independent
code (registryprocess.py), then the modules run through ``ansible-playbook``
as a user would run them, every scenario a task of one playbook. Nothing is
faked. Runtime: about 20 s.

    .venv/bin/pytest -q tests/integration/modules/test_registry_modules.py
"""

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import registryprocess
from registryprocess import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
LIST = "dask_swarm.gateway.registry_manifest_list"
INFO = "dask_swarm.gateway.registry_image_info"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REPOSITORY = "dask-swarm/test-image"
USER = "pusher"

sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.dask_swarm.gateway.plugins.module_utils import registry_client  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _tools_installed():
    missing = [str(tool) for tool in (BIN / "ansible-playbook", registryprocess.REGISTRY_BIN) if not tool.exists()]
    assert not missing, "not installed (make setup installs docker-registry and requirements.txt): %s" % ", ".join(missing)


class Fleet:
    """The two registries, the CA, the password and the images pushed."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry")
    storage = workdir / "storage"
    storage.mkdir()
    f = Fleet()
    f.ca_file, ca_cert, ca_key = registryprocess.make_ca(workdir, "test-ca")
    f.other_ca_file, _, _ = registryprocess.make_ca(workdir, "other-ca")
    cert, key = registryprocess.make_server_cert(workdir, ca_cert, ca_key)
    f.password = "pw-" + secrets.token_urlsafe(18)
    registryprocess.write_htpasswd(workdir / "htpasswd", {USER: f.password})
    f.push = registryprocess.Registry("push", workdir, storage, cert, key, f.ca_file, htpasswd=workdir / "htpasswd")
    f.pull = registryprocess.Registry("pull", workdir, storage, cert, key, f.ca_file, readonly=True)
    f.push.start()
    try:
        f.pull.start()
        auth = (USER, f.password)
        f.images = {
            "t-x86_64": registryprocess.push_image(f.push, REPOSITORY, "t-x86_64", "amd64", auth=auth),
            "t-aarch64": registryprocess.push_image(f.push, REPOSITORY, "t-aarch64", "arm64", "v8", auth=auth),
            "t-oci-riscv64": registryprocess.push_image(f.push, REPOSITORY, "t-oci-riscv64", "riscv64", auth=auth, oci=True),
        }
        # The x86_64 image once more, under another tag: the same platform twice.
        x86 = f.images["t-x86_64"]
        f.push.put_manifest(REPOSITORY, "t-x86_64-copy", x86["body"], x86["media_type"], auth)
        riscv = dict(f.images["t-oci-riscv64"], platform={"os": "linux", "architecture": "riscv64"})
        f.index_digest = registryprocess.push_oci_index(f.push, REPOSITORY, "t-oci-index", [riscv], auth)
        yield f
    finally:
        f.pull.stop()
        f.push.stop()


# Each scenario is one task of one playbook run, in this order. "push" and
# "pull" name the registry; the password reaches the tasks only through an
# environment lookup, as a vault would hand it over.
SOURCES = ["t-x86_64", "t-aarch64"]
SCENARIOS = [
    ("check_mode", LIST, "push", {"tag": "t", "sources": SOURCES}, {"check_mode": True}),
    ("after_check", INFO, "pull", {"tags": ["t"]}, {}),
    ("create", LIST, "push", {"tag": "t", "sources": SOURCES}, {}),
    ("rerun", LIST, "push", {"tag": "t", "sources": SOURCES}, {}),
    ("reversed_check", LIST, "push", {"tag": "t", "sources": SOURCES[::-1]}, {"check_mode": True}),
    ("reversed", LIST, "push", {"tag": "t", "sources": SOURCES[::-1]}, {}),
    ("single", LIST, "push", {"tag": "t2", "sources": ["t-x86_64"]}, {}),
    ("replace", LIST, "push", {"tag": "t2", "sources": SOURCES}, {}),
    (
        "info",
        INFO,
        "pull",
        {"tags": ["t", "t-x86_64", "t-aarch64", "t-oci-riscv64", "t-oci-index", "t-missing"]},
        {"check_mode": True},
    ),
    ("info_no_repository", INFO, "pull", {"repository": "dask-swarm/no-such-repository", "tags": ["t"]}, {}),
    ("wrong_password", LIST, "push", {"tag": "t", "sources": SOURCES, "password": "WRONG"}, {}),
    ("no_credentials", LIST, "push", {"tag": "t", "sources": SOURCES, "username": None, "password": None}, {}),
    ("missing_source", LIST, "push", {"tag": "t3", "sources": ["t-x86_64", "t-no-such-tag"]}, {}),
    ("list_source", LIST, "push", {"tag": "t3", "sources": ["t-x86_64", "t-oci-index"]}, {}),
    ("docker_list_source", LIST, "push", {"tag": "t3", "sources": ["t", "t-aarch64"]}, {}),
    ("same_platform", LIST, "push", {"tag": "t3", "sources": ["t-x86_64", "t-aarch64", "t-x86_64-copy"]}, {}),
    ("empty_sources", LIST, "push", {"tag": "t3", "sources": []}, {}),
    ("no_ca_path", LIST, "push", {"tag": "t", "sources": SOURCES, "ca_path": None}, {}),
    ("other_ca", LIST, "push", {"tag": "t", "sources": SOURCES, "ca_path": "OTHER_CA"}, {}),
    ("info_no_ca_path", INFO, "pull", {"tags": ["t"], "ca_path": None}, {}),
    ("wrong_name", INFO, "push_by_name", {"tags": ["t"]}, {}),
    ("unreachable", INFO, "closed", {"tags": ["t"], "timeout": 5}, {}),
]
FAILING = {
    "wrong_password",
    "no_credentials",
    "missing_source",
    "list_source",
    "docker_list_source",
    "same_platform",
    "empty_sources",
    "no_ca_path",
    "other_ca",
    "info_no_ca_path",
    "wrong_name",
    "unreachable",
}


def manifest_puts(registry, tag):
    """How many PUTs of ``REPOSITORY:tag`` the registry's access log shows."""
    return registry.log_text().count('"PUT /v2/%s/manifests/%s HTTP' % (REPOSITORY, tag))


@pytest.fixture(scope="module")
def playbook_run(fleet, tmp_path_factory):
    """Run every scenario in one playbook at -vvv; return (rc, output, results, wrong password)."""
    workdir = tmp_path_factory.mktemp("playbook")
    closed = registryprocess.free_port()
    addresses = {
        "push": fleet.push.address,
        "pull": fleet.pull.address,
        # The certificate names 127.0.0.1 only.
        "push_by_name": "localhost:%d" % fleet.push.port,
        "closed": "127.0.0.1:%d" % closed,
    }
    tasks = []
    for name, module, target, extra, options in SCENARIOS:
        args = {"registry": addresses[target], "repository": REPOSITORY, "ca_path": str(fleet.ca_file)}
        if target.startswith("push"):
            args.update(username=USER, password="{{ lookup('ansible.builtin.env', 'REG_PASSWORD') }}")
        args.update(extra)
        if args.get("password") == "WRONG":
            args["password"] = "{{ lookup('ansible.builtin.env', 'REG_WRONG_PASSWORD') }}"
        if args.get("ca_path") == "OTHER_CA":
            args["ca_path"] = str(fleet.other_ca_file)
        args = dict((k, v) for k, v in args.items() if v is not None)
        task = {"name": "Scenario " + name, module: args, "register": "r_" + name}
        if name in FAILING:
            task["ignore_errors"] = True
        task.update(options)
        tasks.append(task)
        if name == "check_mode":
            tasks.append(
                {
                    "name": "Count the PUTs of the tag the push registry logged so far",
                    "ansible.builtin.command": {
                        "argv": ["grep", "-c", '"PUT /v2/%s/manifests/t HTTP' % REPOSITORY, str(fleet.push.log)]
                    },
                    "register": "r_puts_after_check",
                    "changed_when": False,
                    "failed_when": False,
                }
            )
    fields = ", ".join("%s=r_%s" % (name, name) for name, _, _, _, _ in SCENARIOS)
    content = "{{ dict(%s, puts_after_check=r_puts_after_check.stdout) | to_json }}" % fields
    tasks.append(
        {
            "name": "Save the results",
            "ansible.builtin.copy": {"content": content, "dest": str(workdir / "results.json"), "mode": "0600"},
        }
    )
    playbook = workdir / "registry.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1))
    wrong = "wrong-" + secrets.token_urlsafe(12)
    env = dict(
        os.environ,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        PATH="%s:%s" % (BIN, os.environ.get("PATH", "")),
        REG_PASSWORD=fleet.password,
        REG_WRONG_PASSWORD=wrong,
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), "-vvv"],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert (workdir / "results.json").exists(), output[-5000:]
    results = json.loads((workdir / "results.json").read_text())
    return proc.returncode, output, results, wrong


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


def failed(result):
    assert result.get("failed") is True, result
    return result["msg"]


def expected_platforms(fleet):
    x86, arm = fleet.images["t-x86_64"], fleet.images["t-aarch64"]
    return [
        {"os": "linux", "architecture": "amd64", "variant": "", "digest": x86["digest"], "source": "t-x86_64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8", "digest": arm["digest"], "source": "t-aarch64"},
    ]


# -- manifest list: create, idempotence, check mode ---------------------------------


def test_check_mode_reports_the_digest_and_puts_nothing(fleet, playbook_run):
    _, _, results, _ = playbook_run
    check = ok(results["check_mode"])
    assert check["changed"] is True
    assert check["previous_digest"] is None
    assert check["digest"] == ok(results["create"])["digest"]
    # Nothing was PUT: the push registry logged no PUT of the tag before the
    # real run, and the anonymous registry did not have the tag after it.
    assert results["puts_after_check"] == "0"
    assert ok(results["after_check"])["images"] == {"t": None}
    assert manifest_puts(fleet.push, "t") == 1  # the one of "create"


def test_the_list_is_created_then_left_alone(fleet, playbook_run):
    _, _, results, _ = playbook_run
    create, rerun = ok(results["create"]), ok(results["rerun"])
    assert create["changed"] is True
    assert create["digest"].startswith("sha256:") and len(create["digest"]) == 71
    assert create["ref"] == "%s/%s@%s" % (fleet.push.address, REPOSITORY, create["digest"])
    assert create["media_type"] == DOCKER_MANIFEST_LIST
    assert create["platforms"] == expected_platforms(fleet)
    assert rerun["changed"] is False
    assert rerun["digest"] == create["digest"] and rerun["previous_digest"] == create["digest"]


def test_the_order_of_the_sources_does_not_matter(playbook_run):
    _, _, results, _ = playbook_run
    digest = results["create"]["digest"]
    for name in ("reversed_check", "reversed"):
        result = ok(results[name])
        assert result["changed"] is False, name
        assert result["digest"] == digest
        assert [p["source"] for p in result["platforms"]] == ["t-x86_64", "t-aarch64"]


def test_a_tag_holding_another_list_is_replaced(playbook_run):
    _, _, results, _ = playbook_run
    single, replace = ok(results["single"]), ok(results["replace"])
    assert single["changed"] is True and [p["architecture"] for p in single["platforms"]] == ["amd64"]
    assert replace["changed"] is True
    assert replace["previous_digest"] == single["digest"]
    # The list's bytes depend on its entries only, not on its tag.
    assert replace["digest"] == results["create"]["digest"]


def test_the_anonymous_registry_serves_the_list_by_tag_and_by_digest(fleet, playbook_run):
    _, _, results, _ = playbook_run
    digest = results["create"]["digest"]
    for reference in ("t", digest):
        status, media_type, announced, body = fleet.pull.get_manifest(REPOSITORY, reference)
        assert status == 200, body
        assert media_type == DOCKER_MANIFEST_LIST
        assert announced == digest == registryprocess.digest(body)
    document = json.loads(body)
    assert document["schemaVersion"] == 2 and document["mediaType"] == DOCKER_MANIFEST_LIST
    x86, arm = fleet.images["t-x86_64"], fleet.images["t-aarch64"]
    assert document["manifests"] == [
        {"mediaType": DOCKER_MANIFEST, "size": x86["size"], "digest": x86["digest"],
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": DOCKER_MANIFEST, "size": arm["size"], "digest": arm["digest"],
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]
    # What a node pulls next: each platform's manifest, by digest, anonymously.
    for image in (x86, arm):
        status, _, announced, _ = fleet.pull.get_manifest(REPOSITORY, image["digest"])
        assert status == 200 and announced == image["digest"]


# -- image info ---------------------------------------------------------------------


def test_image_info_reports_lists_images_and_missing_tags(fleet, playbook_run):
    _, _, results, _ = playbook_run
    info = ok(results["info"])
    assert info["changed"] is False
    images = info["images"]
    assert sorted(images) == sorted(["t", "t-x86_64", "t-aarch64", "t-oci-riscv64", "t-oci-index", "t-missing"])
    assert images["t-missing"] is None
    listed = images["t"]
    assert listed["digest"] == results["create"]["digest"]
    assert listed["media_type"] == DOCKER_MANIFEST_LIST
    assert listed["platforms"] == [
        dict(p, media_type=DOCKER_MANIFEST) for p in ({k: v for k, v in e.items() if k != "source"} for e in expected_platforms(fleet))
    ]
    arm = fleet.images["t-aarch64"]
    assert images["t-aarch64"] == {
        "digest": arm["digest"],
        "media_type": DOCKER_MANIFEST,
        "platforms": [{"os": "linux", "architecture": "arm64", "variant": "v8", "digest": arm["digest"], "media_type": DOCKER_MANIFEST}],
    }
    assert images["t-x86_64"]["platforms"][0]["architecture"] == "amd64"
    assert images["t-x86_64"]["platforms"][0]["variant"] == ""
    riscv = fleet.images["t-oci-riscv64"]
    assert images["t-oci-riscv64"]["media_type"] == OCI_MANIFEST
    assert images["t-oci-riscv64"]["platforms"][0]["architecture"] == "riscv64"
    assert images["t-oci-index"]["media_type"] == OCI_INDEX
    assert images["t-oci-index"]["digest"] == fleet.index_digest
    assert images["t-oci-index"]["platforms"] == [
        {"os": "linux", "architecture": "riscv64", "variant": "", "digest": riscv["digest"], "media_type": OCI_MANIFEST}
    ]


def test_image_info_reports_a_missing_repository_as_null(playbook_run):
    assert ok(playbook_run[2]["info_no_repository"])["images"] == {"t": None}


# -- failures -----------------------------------------------------------------------


def test_wrong_password_fails_without_showing_it(fleet, playbook_run):
    _, _, results, wrong = playbook_run
    msg = failed(results["wrong_password"])
    assert "refused the credentials of user %s" % USER in msg and "HTTP 401" in msg, msg
    assert fleet.push.address in msg
    assert wrong not in msg and fleet.password not in msg


def test_missing_credentials_are_named(playbook_run):
    msg = failed(playbook_run[2]["no_credentials"])
    assert "requires credentials" in msg and "set username and password" in msg, msg


def test_a_missing_source_is_named(fleet, playbook_run):
    msg = failed(playbook_run[2]["missing_source"])
    assert msg == "source %s:t-no-such-tag not found in the registry %s" % (REPOSITORY, fleet.push.address)


def test_a_source_that_is_a_list_is_refused(playbook_run):
    _, _, results, _ = playbook_run
    msg = failed(results["list_source"])
    assert "source %s:t-oci-index is itself a manifest list or index (%s)" % (REPOSITORY, OCI_INDEX) in msg, msg
    msg = failed(results["docker_list_source"])
    assert "source %s:t is itself a manifest list or index (%s)" % (REPOSITORY, DOCKER_MANIFEST_LIST) in msg, msg


def test_two_sources_of_one_platform_are_refused_by_name(playbook_run):
    msg = failed(playbook_run[2]["same_platform"])
    assert msg.startswith("sources t-x86_64 and t-x86_64-copy have the same platform linux/amd64"), msg


def test_empty_sources_are_refused(playbook_run):
    assert "sources is empty" in failed(playbook_run[2]["empty_sources"])


def test_an_untrusted_certificate_names_ca_path(fleet, playbook_run):
    _, _, results, _ = playbook_run
    for name in ("no_ca_path", "info_no_ca_path"):
        msg = failed(results[name])
        assert msg.startswith("TLS verification of the registry 127.0.0.1:"), msg
        assert "no ca_path given" in msg and "set ca_path" in msg, msg
    msg = failed(results["other_ca"])
    assert "not signed by the CA of ca_path %s" % fleet.other_ca_file in msg, msg
    msg = failed(results["wrong_name"])
    assert "the registry's certificate does not name localhost (ca_path: %s)" % fleet.ca_file in msg, msg


def test_an_unreachable_registry_is_named(playbook_run):
    msg = failed(playbook_run[2]["unreachable"])
    assert msg.startswith("cannot reach the registry 127.0.0.1:"), msg
    assert "refused" in msg.lower(), msg


def test_the_password_appears_nowhere(fleet, playbook_run):
    rc, output, results, wrong = playbook_run
    assert rc == 0, output[-3000:]  # every failing scenario ignores its errors
    assert "ignored=%d" % len(FAILING) in output, output[-2000:]
    basic = base64.b64encode(("%s:%s" % (USER, fleet.password)).encode()).decode()
    for secret in (fleet.password, wrong, basic):
        assert secret not in output
        assert secret not in json.dumps(results)


# -- the deployment design, with the client directly --------------------------------


def test_the_anonymous_registry_refuses_pushes(fleet):
    client = registry_client.RegistryClient(fleet.pull.address, ca_path=str(fleet.ca_file))
    body, _, _ = registry_client.build_manifest_list(
        [
            {
                "source": "t-x86_64",
                "media_type": DOCKER_MANIFEST,
                "size": fleet.images["t-x86_64"]["size"],
                "digest": fleet.images["t-x86_64"]["digest"],
                "platform": {"os": "linux", "architecture": "amd64", "variant": ""},
            }
        ]
    )
    with pytest.raises(registry_client.RegistryError) as refused:
        client.put_manifest(REPOSITORY, "t-anonymous", body, DOCKER_MANIFEST_LIST)
    assert refused.value.status == 405, str(refused.value)
    assert "does not allow PUT %s:t-anonymous" % REPOSITORY in str(refused.value)
    # Credentials do not help: the read-only registry has no users at all.
    client = registry_client.RegistryClient(
        fleet.pull.address, ca_path=str(fleet.ca_file), username=USER, password=fleet.password
    )
    with pytest.raises(registry_client.RegistryError) as refused:
        client.put_manifest(REPOSITORY, "t-anonymous", body, DOCKER_MANIFEST_LIST)
    assert refused.value.status == 405
    assert fleet.password not in str(refused.value)
    status, _, _, _ = fleet.pull.get_manifest(REPOSITORY, "t-anonymous")
    assert status == 404


def test_the_push_registry_wants_credentials_to_read(fleet):
    client = registry_client.RegistryClient(fleet.push.address, ca_path=str(fleet.ca_file))
    with pytest.raises(registry_client.RegistryError) as refused:
        client.get_manifest(REPOSITORY, "t-x86_64")
    assert refused.value.status == 401


def test_a_blob_is_read_and_checked(fleet):
    client = registry_client.RegistryClient(fleet.pull.address, ca_path=str(fleet.ca_file))
    manifest = client.get_manifest(REPOSITORY, "t-aarch64")
    assert manifest.digest == fleet.images["t-aarch64"]["digest"]
    config = client.get_config(REPOSITORY, manifest, "t-aarch64")
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
