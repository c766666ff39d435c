"""Start a user's notebook server with its hub token from a Swarm secret.

``python -m dask_gateway_swarm.singleuser jupyterhub-singleuser [ARGS...]``:
the hub's NotebookSpawner (dask_gateway_swarm.hub) keeps the token out of
the service's environment, where ``docker service inspect`` would show it,
and mounts it as ``/run/secrets/jupyterhub-api-token`` instead. This puts it
back where jupyterhub-singleuser and the dask-gateway client
(``auth: jupyterhub``) look for it, in the process's own environment, and
then becomes the given command.
"""

import os
import sys

TOKEN_FILE = "/run/secrets/jupyterhub-api-token"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit("usage: python -m dask_gateway_swarm.singleuser COMMAND [ARGS...]")
    try:
        with open(TOKEN_FILE, encoding="utf-8") as f:
            os.environ["JUPYTERHUB_API_TOKEN"] = f.read().strip()
    except OSError as exc:
        sys.exit(f"dask_gateway_swarm.singleuser: cannot read the hub token at {TOKEN_FILE}: {exc.strerror}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
