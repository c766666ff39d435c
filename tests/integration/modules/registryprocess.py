"""Two real Docker Distribution registries (Debian's ``docker-registry``) on 127.0.0.1, for tests.

This is the design the collection deploys: one storage directory, served by a
registry with htpasswd auth (credentialed pushes) and by a read-only one
without auth (anonymous pulls). Both speak HTTPS with a certificate for
127.0.0.1 from a CA made here. Each runs on a free port in a session of its
own and is stopped by process group at the end.

The images are uploaded with plain urllib here, not with the collection's
client, so the modules under test read what independent code wrote.
"""

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY_BIN = Path(os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry"))

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join(
    [DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST, OCI_INDEX]
)

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
  tls:
    certificate: {cert}
    key: {key}
{auth}"""

AUTH = """\
auth:
  htpasswd:
    realm: dask-swarm-test
    path: {htpasswd}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- certificates and passwords ------------------------------------------------


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(directory, name):
    """A CA certificate and key; returns (cert file, cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / ("%s.crt" % name)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(directory, ca_cert, ca_key):
    """A server certificate for 127.0.0.1 signed by the CA; returns (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "registry.crt", directory / "registry.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_key_pem(key))
    key_file.chmod(0o600)
    return cert_file, key_file


def write_htpasswd(path, users):
    """An htpasswd file with bcrypt hashes, which is all Distribution accepts."""
    lines = ["%s:%s" % (user, bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()) for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


# -- the registry processes ----------------------------------------------------


class Registry:
    """One ``docker-registry serve`` process."""

    def __init__(self, name, workdir, storage, cert, key, ca_file, htpasswd=None, readonly=False):
        self.name = name
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.ca_file = ca_file
        self.log = workdir / ("%s.log" % name)
        self.config = workdir / ("%s.yml" % name)
        self.config.write_text(
            CONFIG.format(
                storage=storage,
                readonly="true" if readonly else "false",
                port=self.port,
                secret=base64.b64encode(os.urandom(24)).decode(),
                cert=cert,
                key=key,
                auth=AUTH.format(htpasswd=htpasswd) if htpasswd else "",
            )
        )
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.proc = None

    def start(self, timeout=30):
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(REGISTRY_BIN), "serve", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                status, _, _ = self.request("GET", "/v2/")
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("%s registry did not start:\n%s" % (self.name, self.log.read_text(errors="replace")[-3000:]))

    def stop(self, timeout=20):
        """SIGTERM the registry's process group (only what this fixture started), then SIGKILL."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_text(self):
        return self.log.read_text(errors="replace")

    def request(self, method, path, body=None, headers=None, auth=None):
        """``(status, headers, body)``; HTTP errors are returned, not raised."""
        url = path if path.startswith("https://") else "https://%s%s" % (self.address, path)
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    # -- uploads (independent of the collection's client) ------------------

    def push_blob(self, repository, data, auth):
        blob = digest(data)
        status, _, _ = self.request("HEAD", "/v2/%s/blobs/%s" % (repository, blob), auth=auth)
        if status == 200:
            return blob
        status, headers, body = self.request("POST", "/v2/%s/blobs/uploads/" % repository, body=b"", auth=auth)
        assert status == 202, (status, body)
        location = headers["Location"]
        location += ("&" if "?" in location else "?") + "digest=" + blob
        status, _, body = self.request(
            "PUT", location, body=data, headers={"Content-Type": "application/octet-stream"}, auth=auth
        )
        assert status == 201, (status, body)
        return blob

    def put_manifest(self, repository, reference, body, media_type, auth):
        status, headers, answer = self.request(
            "PUT", "/v2/%s/manifests/%s" % (repository, reference), body=body, headers={"Content-Type": media_type}, auth=auth
        )
        assert status == 201, (status, answer)
        assert headers["Docker-Content-Digest"] == digest(body)
        return digest(body)

    def get_manifest(self, repository, reference, auth=None):
        """``(status, media type, digest header, body)``."""
        status, headers, body = self.request(
            "GET", "/v2/%s/manifests/%s" % (repository, reference), headers={"Accept": ACCEPT}, auth=auth
        )
        return status, headers.get("Content-Type"), headers.get("Docker-Content-Digest"), body


def layer_tar_gz(text):
    """A gzipped tar of one file, the same bytes every time; returns (compressed, uncompressed)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo("etc/platform")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), uncompressed


def push_image(registry, repository, tag, architecture, variant=None, auth=None, oci=False):
    """A small synthetic image of one platform, pushed as ``repository:tag``.

    Returns a dict: manifest ``digest``, ``size``, ``media_type`` and ``body``, ``config_digest``.
    """
    compressed, uncompressed = layer_tar_gz("linux/%s%s\n" % (architecture, "/" + variant if variant else ""))
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(uncompressed)]},
    }
    if variant:
        config["variant"] = variant
    config_body = json.dumps(config, sort_keys=True).encode()
    layer_digest = registry.push_blob(repository, compressed, auth)
    config_digest = registry.push_blob(repository, config_body, auth)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": len(config_body), "digest": config_digest},
        "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "size": len(compressed), "digest": layer_digest}],
    }
    body = json.dumps(manifest, indent=2).encode()
    registry.put_manifest(repository, tag, body, media_type, auth)
    return {"digest": digest(body), "size": len(body), "media_type": media_type, "body": body, "config_digest": config_digest}


def push_oci_index(registry, repository, tag, images, auth):
    """An OCI index of ``images`` (dicts of push_image with a ``platform``), pushed as ``repository:tag``."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": image["media_type"], "size": image["size"], "digest": image["digest"], "platform": image["platform"]}
            for image in images
        ],
    }
    body = json.dumps(index, indent=2).encode()
    return registry.put_manifest(repository, tag, body, OCI_INDEX, auth)
