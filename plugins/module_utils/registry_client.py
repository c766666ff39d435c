# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small HTTPS client for a Docker Distribution registry (the v2 API), standard library only.

It reads and writes manifests and reads blobs, with HTTP basic auth (what
Distribution's htpasswd auth asks for) and a CA file of the collection's own.
Every failure raises ``RegistryError`` with a message that names what failed
(the registry's ``host:port``, ``repository:tag``, ``ca_path``) and never
contains the password.

What decides (names, digests, platforms, the manifest list and its bytes) is a
plain function, so unit tests need no registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote, urljoin

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

#: Media types of a single image's manifest and of a list of them.
IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
LIST_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join(IMAGE_MANIFEST_TYPES + LIST_TYPES)

#: Distribution refuses manifests larger than this; so does this client.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: Image configs are a few kilobytes; this bounds what a bad registry can send.
MAX_BLOB_BYTES = 16 * 1024 * 1024

# The reference grammar of github.com/distribution/reference.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(r"^%s(?:/%s)*$" % (_COMPONENT, _COMPONENT))
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
REGISTRY_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

#: The JSON layout of the manifest lists this collection writes: the same
#: entries always give the same bytes, hence the same digest.
JSON_INDENT = 3
JSON_SEPARATORS = (",", ": ")


class RegistryError(Exception):
    """Anything that went wrong talking to the registry.

    ``status`` is the HTTP status when the registry answered (404, 401, ...),
    else None; ``codes`` the error codes of its answer (``MANIFEST_UNKNOWN``, ...).
    """

    def __init__(self, message, status=None, codes=()):
        super().__init__(message)
        self.message = message
        self.status = status
        self.codes = tuple(codes)

    def __str__(self):
        return self.message

    @property
    def not_found(self):
        return self.status == 404


def argument_spec():
    """The registry connection options, to merge into a module's argument spec."""
    return dict(
        registry=dict(type="str", required=True),
        ca_path=dict(type="path"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        timeout=dict(type="int", default=30),
    )


#: For AnsibleModule(required_together=...).
REQUIRED_TOGETHER = [("username", "password")]


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def check_registry(registry):
    """``registry`` must be ``host`` or ``host:port``, without a scheme or a path."""
    if not isinstance(registry, str) or not REGISTRY_RE.match(registry):
        raise RegistryError(
            "registry must be host:port (for example 192.0.2.10:5000), without a scheme or a path; got %r" % (registry,)
        )
    return registry


def check_repository(repository):
    if not isinstance(repository, str) or not REPOSITORY_RE.match(repository) or len(repository) > 255:
        raise RegistryError(
            "invalid repository name %r: lower-case components of letters, digits and . _ - separated by /"
            % (repository,)
        )
    return repository


def check_reference(reference):
    """A tag or a ``sha256:`` digest."""
    if isinstance(reference, str) and (TAG_RE.match(reference) or DIGEST_RE.match(reference)):
        return reference
    raise RegistryError(
        "invalid tag %r: up to 128 letters, digits and _ . - (not starting with . or -), or a sha256: digest"
        % (reference,)
    )


def digest_of(body):
    """The content digest of ``body`` (bytes), as the registry names it."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def verify_digest(body, announced, what):
    """The digest of ``body``; raises when the registry announced another one."""
    actual = digest_of(body)
    if announced and announced != actual:
        raise RegistryError("%s: the registry announced digest %s but the content has digest %s" % (what, announced, actual))
    return actual


def bare_media_type(content_type):
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";")[0].strip().lower()


def parse_json(body, what):
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError("%s is not valid JSON: %s" % (what, exc))
    if not isinstance(value, dict):
        raise RegistryError("%s is not a JSON object" % what)
    return value


def manifest_media_type(document, content_type):
    """The manifest's media type: its own ``mediaType`` field, else the response's Content-Type.

    OCI manifests may leave the field out; an OCI index is recognised by its ``manifests``.
    """
    media_type = document.get("mediaType") or bare_media_type(content_type)
    if media_type in IMAGE_MANIFEST_TYPES + LIST_TYPES:
        return media_type
    if document.get("schemaVersion") == 2 and media_type in ("", "application/json", "application/octet-stream"):
        return OCI_INDEX if "manifests" in document else OCI_MANIFEST
    return media_type


def platform_from_config(config):
    """os, architecture and variant (empty when none) of an image config (a dict)."""
    return {
        "os": str(config.get("os") or ""),
        "architecture": str(config.get("architecture") or ""),
        "variant": str(config.get("variant") or ""),
    }


def platform_from_entry(entry):
    """os, architecture and variant (empty when none) of a list's or index's entry."""
    platform = entry.get("platform") or {}
    return {
        "os": str(platform.get("os") or ""),
        "architecture": str(platform.get("architecture") or ""),
        "variant": str(platform.get("variant") or ""),
    }


def platform_key(platform):
    return (platform.get("os") or "", platform.get("architecture") or "", platform.get("variant") or "")


def platform_name(platform):
    """``linux/arm64/v8``, ``linux/amd64``."""
    return "/".join(part for part in platform_key(platform) if part)


def config_descriptor(document, what):
    """The config descriptor's digest of a single image's manifest."""
    config = document.get("config")
    if not isinstance(config, dict) or not DIGEST_RE.match(str(config.get("digest") or "")):
        raise RegistryError("%s has no config descriptor with a sha256 digest" % what)
    return config["digest"]


def build_manifest_list(entries):
    """A Docker manifest list of ``entries``; returns ``(body bytes, digest, sorted entries)``.

    Each entry is a dict with ``source`` (its tag, for messages), ``media_type``,
    ``size``, ``digest`` and ``platform`` (os, architecture, variant). The list
    holds them sorted by (os, architecture, variant), whatever their order.
    Two entries with one platform, or an entry without os or architecture, raise.
    """
    if not entries:
        raise RegistryError("a manifest list needs at least one source")
    seen = {}
    for entry in entries:
        platform = entry["platform"]
        if not platform.get("os") or not platform.get("architecture"):
            raise RegistryError(
                "source %s: its image config names no os and architecture (os=%r, architecture=%r)"
                % (entry["source"], platform.get("os"), platform.get("architecture"))
            )
        key = platform_key(platform)
        if key in seen:
            raise RegistryError(
                "sources %s and %s have the same platform %s; a manifest list holds one image per platform"
                % (seen[key]["source"], entry["source"], platform_name(platform))
            )
        seen[key] = entry
    ordered = [seen[key] for key in sorted(seen)]
    manifests = []
    for entry in ordered:
        platform = {"architecture": entry["platform"]["architecture"], "os": entry["platform"]["os"]}
        if entry["platform"].get("variant"):
            platform["variant"] = entry["platform"]["variant"]
        manifests.append(
            {
                "mediaType": entry["media_type"],
                "size": int(entry["size"]),
                "digest": entry["digest"],
                "platform": platform,
            }
        )
    document = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": manifests}
    body = serialize(document)
    return body, digest_of(body), ordered


def serialize(document):
    """The bytes this collection writes for a manifest: fixed indent, separators and key order."""
    return json.dumps(document, indent=JSON_INDENT, separators=JSON_SEPARATORS, sort_keys=True, ensure_ascii=True).encode(
        "ascii"
    )


def error_details(body):
    """Codes and a short text of a Distribution error body (``{"errors": [...]}``)."""
    try:
        errors = json.loads(body.decode("utf-8", "replace")).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    codes, texts = [], []
    for error in errors:
        if not isinstance(error, dict):
            continue
        code = str(error.get("code") or "")
        codes.append(code)
        text = " ".join(part for part in (code, str(error.get("message") or "")) if part)
        detail = error.get("detail")
        if detail and code not in ("UNAUTHORIZED", "DENIED"):
            text += " (%s)" % json.dumps(detail, sort_keys=True)[:300]
        texts.append(text)
    return codes, "; ".join(texts)


def secret_variants(username, password):
    """Every form in which the password could appear in a message."""
    if not password:
        return []
    variants = {password, quote(password, safe=""), quote(password)}
    try:
        variants.add(base64.b64encode(("%s:%s" % (username or "", password)).encode("utf-8")).decode("ascii"))
    except UnicodeEncodeError:  # pragma: no cover - str always encodes to utf-8
        pass
    return sorted((v for v in variants if v), key=len, reverse=True)


def redact(text, secrets):
    for secret in secrets:
        text = text.replace(secret, "********")
    return text


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


class Manifest:
    """A manifest as the registry served it."""

    def __init__(self, body, media_type, digest, document):
        self.body = body
        self.media_type = media_type
        self.digest = digest
        self.document = document

    @property
    def is_list(self):
        return self.media_type in LIST_TYPES

    @property
    def size(self):
        return len(self.body)


class Response:
    """A 2xx answer of the registry."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body


class _CredentialSafeRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed for GET and HEAD only (a blob may live in another store); the
    Authorization header, added unredirected, stays behind."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if req.get_method() not in ("GET", "HEAD"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RegistryClient:
    """HTTPS to one registry, ``host:port``.

    ``ca_path`` is a CA file to trust instead of the system's; ``username`` and
    ``password`` are sent with every request (basic auth), and only to this
    registry: a redirect elsewhere does not carry them.
    """

    def __init__(self, registry, ca_path=None, username=None, password=None, timeout=30):
        self.registry = check_registry(registry)
        self.ca_path = ca_path
        self.username = username
        self.password = password
        self.timeout = timeout
        self._secrets = secret_variants(username, password)
        try:
            context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError("cannot load the CA certificates of ca_path %s: %s" % (ca_path, exc))
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _CredentialSafeRedirect())

    @classmethod
    def from_params(cls, params):
        return cls(
            params["registry"],
            ca_path=params.get("ca_path"),
            username=params.get("username"),
            password=params.get("password"),
            timeout=params.get("timeout") or 30,
        )

    # -- transport ---------------------------------------------------------

    def url(self, path):
        return "https://%s%s" % (self.registry, path)

    def _fail(self, message, status=None, codes=()):
        raise RegistryError(message, status=status, codes=codes)

    def _outside(self, text):
        """Text from outside (the registry's answer, an OS error), with any form of the password masked."""
        return redact(str(text), self._secrets)

    def _trust_hint(self, reason=None):
        if getattr(reason, "verify_code", None) in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            return "the registry's certificate does not name %s (ca_path: %s)" % (
                self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry,
                self.ca_path or "none, the system's CA certificates",
            )
        if self.ca_path:
            return "the registry's certificate is not signed by the CA of ca_path %s" % self.ca_path
        return "no ca_path given, so the system's CA certificates were used; set ca_path to the CA that signed the registry's certificate"

    def request(self, method, path, body=None, headers=None, what=None, limit=MAX_MANIFEST_BYTES):
        """One request; returns a ``Response`` for a 2xx answer, raises ``RegistryError`` otherwise.

        ``path`` is the path of a v2 API URL or a URL on this registry (an upload's Location).
        ``what`` names the object in messages (``repository:tag``).
        """
        url = urljoin(self.url("/"), path)
        what = what or path
        request = urllib.request.Request(url, data=body, method=method)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.username is not None and self.password is not None:
            token = base64.b64encode(("%s:%s" % (self.username, self.password)).encode("utf-8")).decode("ascii")
            # Unredirected: a redirect (to a blob store) must not carry the credentials.
            request.add_unredirected_header("Authorization", "Basic " + token)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                data = response.read(limit + 1) if method != "HEAD" else b""
                if len(data) > limit:
                    self._fail("%s: the registry %s sent more than %d bytes" % (what, self.registry, limit))
                return Response(response.status, response.headers, data)
        except urllib.error.HTTPError as exc:
            try:
                data = exc.read(64 * 1024) if method != "HEAD" else b""
            except OSError:
                data = b""
            self._http_error(method, exc.code, exc.headers, data, what)
        except urllib.error.URLError as exc:
            self._transport_error(exc.reason)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._transport_error(exc)
        except (socket.timeout, TimeoutError):
            self._fail("the registry %s did not answer within %s s" % (self.registry, self.timeout))
        except OSError as exc:
            self._transport_error(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transport_error(self, reason):
        if isinstance(reason, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            self._fail(
                "TLS verification of the registry %s failed (%s): %s"
                % (self.registry, self._outside(getattr(reason, "verify_message", None) or reason), self._trust_hint(reason))
            )
        if isinstance(reason, ssl.SSLError):
            self._fail(
                "TLS handshake with the registry %s failed (%s); is it serving HTTPS? (ca_path: %s)"
                % (self.registry, self._outside(reason), self.ca_path or "none, the system's CA certificates")
            )
        if isinstance(reason, (socket.timeout, TimeoutError)):
            self._fail("the registry %s did not answer within %s s" % (self.registry, self.timeout))
        self._fail("cannot reach the registry %s: %s" % (self.registry, self._outside(reason)))

    def _http_error(self, method, status, headers, data, what):
        codes, text = error_details(data)
        if not text and data and bare_media_type(headers.get("Content-Type") if headers else "").startswith("text/"):
            text = " ".join(data[:200].decode("utf-8", "replace").split())
        text = self._outside(text)
        said = " (%s)" % text if text else ""
        if status == 401:
            challenge = (headers.get("WWW-Authenticate") or "") if headers else ""
            if challenge.lower().startswith("bearer"):
                self._fail(
                    "the registry %s asks for token (Bearer) authentication, which this client does not speak; "
                    "it supports basic auth (htpasswd)" % self.registry,
                    status=status,
                    codes=codes,
                )
            if self.username is None or self.password is None:
                self._fail(
                    "the registry %s requires credentials for %s %s (HTTP 401); set username and password"
                    % (self.registry, method, what),
                    status=status,
                    codes=codes,
                )
            self._fail(
                "the registry %s refused the credentials of user %s for %s %s (HTTP 401): wrong username or password"
                % (self.registry, self.username, method, what),
                status=status,
                codes=codes,
            )
        if status == 403:
            self._fail(
                "the registry %s denied %s %s to user %s (HTTP 403)%s" % (self.registry, method, what, self.username, said),
                status=status,
                codes=codes,
            )
        if status == 404:
            self._fail(
                "%s not found in the registry %s (HTTP 404)%s" % (what, self.registry, said), status=status, codes=codes
            )
        if status == 405:
            self._fail(
                "the registry %s does not allow %s %s (HTTP 405)%s; is it a read-only mirror?"
                % (self.registry, method, what, said),
                status=status,
                codes=codes,
            )
        self._fail("the registry %s answered %s %s with HTTP %d%s" % (self.registry, method, what, status, said), status=status, codes=codes)

    # -- the API -----------------------------------------------------------

    def ping(self):
        """GET /v2/: the registry speaks the v2 API and accepts the credentials."""
        self.request("GET", "/v2/", what="/v2/")

    def _manifest_path(self, repository, reference):
        check_repository(repository)
        check_reference(reference)
        return "/v2/%s/manifests/%s" % (repository, quote(reference, safe=":")), self._name(repository, reference)

    @staticmethod
    def _name(repository, reference):
        return "%s%s%s" % (repository, "@" if reference.startswith("sha256:") else ":", reference)

    def get_manifest(self, repository, reference):
        """The manifest ``repository:reference`` (a tag or a digest); raises 404 when missing."""
        path, what = self._manifest_path(repository, reference)
        response = self.request("GET", path, headers={"Accept": MANIFEST_ACCEPT}, what=what)
        body, headers = response.body, response.headers
        digest = verify_digest(body, headers.get("Docker-Content-Digest"), what)
        if reference.startswith("sha256:") and digest != reference:
            self._fail("%s: the registry served content with digest %s" % (what, digest))
        document = parse_json(body, "the manifest of %s" % what)
        return Manifest(body, manifest_media_type(document, headers.get("Content-Type")), digest, document)

    def head_manifest(self, repository, reference):
        """``(media type, digest)`` of the manifest, or None when the registry has none."""
        path, what = self._manifest_path(repository, reference)
        try:
            headers = self.request("HEAD", path, headers={"Accept": MANIFEST_ACCEPT}, what=what).headers
        except RegistryError as exc:
            if exc.not_found:
                return None
            raise
        digest = headers.get("Docker-Content-Digest")
        if not digest:
            # Some registries leave the header out of HEAD answers: read the manifest.
            manifest = self.get_manifest(repository, reference)
            return manifest.media_type, manifest.digest
        return bare_media_type(headers.get("Content-Type")), digest

    def get_blob(self, repository, digest, limit=MAX_BLOB_BYTES):
        """The blob's bytes, checked against ``digest``."""
        check_repository(repository)
        if not DIGEST_RE.match(str(digest)):
            self._fail("invalid blob digest %r in %s" % (digest, repository))
        what = "blob %s@%s" % (repository, digest)
        body = self.request("GET", "/v2/%s/blobs/%s" % (repository, digest), what=what, limit=limit).body
        verify_digest(body, digest, what)
        return body

    def get_config(self, repository, manifest, what):
        """The image config (a dict) of a single image's manifest."""
        digest = config_descriptor(manifest.document, what)
        return parse_json(self.get_blob(repository, digest), "the image config %s of %s" % (digest, what))

    def put_manifest(self, repository, reference, body, media_type):
        """Store ``body`` as ``repository:reference``; returns its digest."""
        path, what = self._manifest_path(repository, reference)
        headers = self.request("PUT", path, body=body, headers={"Content-Type": media_type}, what=what).headers
        return verify_digest(body, headers.get("Docker-Content-Digest"), what)

    # -- images ------------------------------------------------------------

    def platforms(self, repository, manifest, what):
        """The platforms of a manifest: a list's entries, or a single image's config."""
        if manifest.is_list:
            platforms = []
            for entry in manifest.document.get("manifests") or []:
                platform = platform_from_entry(entry)
                platform.update(digest=entry.get("digest"), media_type=entry.get("mediaType"))
                platforms.append(platform)
            return platforms
        if manifest.media_type not in IMAGE_MANIFEST_TYPES:
            self._fail("%s has media type %s, which this client does not read" % (what, manifest.media_type or "(none)"))
        platform = platform_from_config(self.get_config(repository, manifest, what))
        platform.update(digest=manifest.digest, media_type=manifest.media_type)
        return [platform]
