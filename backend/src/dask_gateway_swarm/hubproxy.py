"""JupyterHub's proxy with HTTPS on its public port.

The hub runs configurable-http-proxy's Python implementation (no Node.js
in the image), whose command line refuses ``--ssl-key``/``--ssl-cert``
("not supported yet") although its server is tornado's, which speaks TLS.
``python -m dask_gateway_swarm.hubproxy [CHP ARGS...]`` takes those two
options, loads the certificate, and runs the proxy's own command line
with its public server (the first it makes) serving TLS; its REST API
stays on loopback in plain HTTP, as the hub expects.

    c.ConfigurableHTTPProxy.command = ["python", "-m", "dask_gateway_swarm.hubproxy"]
"""

import ssl
import sys

from configurable_http_proxy import cli
from tornado.httpserver import HTTPServer


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cert, key = pop_option(argv, "--ssl-cert"), pop_option(argv, "--ssl-key")
    if cert or key:
        if not (cert and key):
            sys.exit("dask_gateway_swarm.hubproxy: HTTPS needs both --ssl-cert and --ssl-key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        made = []

        # cli.main makes the public server first, then the API's.
        def server(app, **kwargs):
            if not made:
                kwargs["ssl_options"] = context
            made.append(app)
            return HTTPServer(app, **kwargs)

        cli.HTTPServer = server
    sys.argv = [sys.argv[0], *argv]
    cli.main()


def pop_option(argv, name):
    """Remove ``name VALUE`` or ``name=VALUE`` from argv and return VALUE (None if absent)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg[len(name) + 1 :]
    return None


if __name__ == "__main__":
    main()
