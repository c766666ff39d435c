#!/usr/bin/python
# Copyright: dask_swarm.gateway contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: gateway_check
short_description: Check a Dask Gateway end to end with the stock client
version_added: 0.1.0
author: dask_swarm.gateway contributors (@dask_swarm)
description:
  - Connects to a Dask Gateway with the C(dask_gateway) client and lists the clusters.
  - Then creates a cluster with O(cluster_options), scales it to O(workers) workers and waits
    for them, runs a computation and checks its result, compares the versions of client,
    scheduler and workers, reports the node each worker runs on, fetches the dashboard and
    expects HTTP 200, shuts the cluster down and waits until the gateway no longer lists it.
  - "Each step is timed (RV(steps), RV(timings)). A failure names its step, for example
    C(step scale: 2 of 3 workers after 120 s)."
  - The cluster it created is always stopped, also when a later step fails; if that is not
    possible the module fails and says so.
  - "The module runs where the client library is, normally the controller. Use
    C(delegate_to: localhost) and C(run_once: true) in a play that targets the fleet."
  - The client runs in asynchronous mode on the module's own event loop, with a time limit on
    every call, so that a stuck gateway cannot hang the play.
  - The password is never part of the output, of error messages or of returned values.
options:
  address:
    description:
      - URL of the gateway's HTTP API, for example V(http://gateway.example:8000).
    type: str
    required: true
  proxy_address:
    description:
      - Address of the gateway's scheduler proxy (C(host:port) or C(gateway://host:port)).
      - Defaults to the host and port of O(address).
    type: str
  public_address:
    description:
      - URL of the gateway as a browser reaches it; the dashboard link starts with it.
      - Defaults to O(address).
    type: str
  username:
    description:
      - User name for HTTP basic authentication. The gateway's C(SimpleAuthenticator) takes it
        on trust.
      - Defaults to the name of the user running the module.
    type: str
  password:
    description:
      - Password for HTTP basic authentication (C(SimpleAuthenticator)'s shared password).
      - Without it the client authenticates as its Dask configuration says (C(gateway.auth.type)).
    type: str
  cluster_options:
    description:
      - "Options of the new cluster, by the names the gateway offers (C(Gateway.cluster_options())),
        for example C({worker_cores: 1, worker_memory: 2})."
      - A name the gateway does not offer fails step C(options) and lists the names it offers.
    type: dict
    default: {}
  workers:
    description: Number of workers to scale the cluster to.
    type: int
    default: 2
  timeout:
    description:
      - Seconds each step may take. Steps that wait (C(scale), C(shutdown)) report how far they
        got when the time is up.
    type: int
    default: 120
  min_distinct_nodes:
    description:
      - Fail step C(placement) when the workers run on fewer distinct nodes than this.
      - Set it to 2 or more on a fleet with several worker nodes to check that workers spread.
    type: int
  expect_worker_nodes:
    description:
      - Node names (as reported by the worker, see O(node_env_vars)) or worker host names of
        which each must run at least one worker; step C(placement) fails otherwise.
    type: list
    elements: str
    default: []
  node_env_vars:
    description:
      - Environment variables a worker may carry that name its node, read in this order, for
        example set from the Swarm service template C({{.Node.ID}}).
      - When none is set the worker's host name is its node.
    type: list
    elements: str
    default: [DASK_SWARM_NODE_ID, SWARM_NODE_ID]
  check_versions:
    description:
      - Fail step C(versions) when client, scheduler and workers run different versions of
        O(version_packages). With V(false) a difference is only reported, in RV(version_mismatches)
        and as a warning.
    type: bool
    default: true
  version_packages:
    description: Packages whose versions must match. C(python) is compared by major and minor version.
    type: list
    elements: str
    default: [python, dask, distributed, cloudpickle, msgpack, toolz, tornado]
  check_dashboard:
    description: Fetch the cluster's dashboard link and expect HTTP 200.
    type: bool
    default: true
  validate_certs:
    description:
      - Verify the gateway's TLS certificate when O(address) is C(https).
      - Applies to the HTTP API and to the dashboard, not to the scheduler connection, which
        uses the cluster's own certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle that signed the gateway's certificate, when not a system CA.
    type: path
attributes:
  check_mode:
    description: Can run in check mode and return the changed status without changing anything.
    support: full
    details: In check mode the module only connects and lists the clusters; it creates nothing.
  diff_mode:
    description: Can return a diff of what would change.
    support: none
requirements:
  - dask-gateway (the client) and distributed, matching the versions of the cluster image.
notes:
  - The module never reports a change; the cluster it creates is gone when it returns.
  - The dashboard is fetched with the basic-auth credentials only when it is served from the
    same origin as O(address) or O(public_address).
seealso:
  - module: dask_swarm.gateway.swarm_status
"""

EXAMPLES = r"""
- name: Check the gateway from the controller
  dask_swarm.gateway.gateway_check:
    address: "http://{{ groups['swarm_managers'][0] }}:8000"
    username: ansible-check
    password: "{{ dask_gateway_password }}"
    cluster_options:
      worker_cores: 1
      worker_memory: 2
    workers: 3
    min_distinct_nodes: 2
    timeout: 180
  delegate_to: localhost
  run_once: true
  register: gateway_check

- name: Show where the workers ran and how long each step took
  ansible.builtin.debug:
    msg: "{{ gateway_check.nodes }} {{ gateway_check.timings }}"
  run_once: true

- name: Only check that the gateway answers and the password is right
  dask_swarm.gateway.gateway_check:
    address: https://dask.example.org
    password: "{{ dask_gateway_password }}"
    ca_path: /etc/ssl/certs/lab-ca.pem
  delegate_to: localhost
  run_once: true
  check_mode: true
"""

RETURN = r"""
clusters:
  description: The clusters the gateway listed for this user when the module connected.
  returned: success or after step connect
  type: list
  elements: dict
  sample: [{"name": "4b9e1c0d2f8a4e7f9a1b2c3d4e5f6a7b", "status": "RUNNING"}]
cluster_name:
  description: Name of the cluster the module created.
  returned: when a cluster was created
  type: str
cluster_options:
  description: The options the cluster was created with, including the gateway's defaults.
  returned: when step options ran
  type: dict
worker_count:
  description: Number of workers the scheduler knew when step scale ended.
  returned: when step scale passed
  type: int
computation:
  description: The computation run on the cluster (a sum of squares) and its result.
  returned: when step compute ran
  type: dict
  sample: {"tasks": 201, "result": 2646700, "expected": 2646700}
versions:
  description: Per package, the version of the client, the scheduler and the distinct versions of the workers.
  returned: when step versions ran
  type: dict
  sample: {"distributed": {"client": "2026.8.0", "scheduler": "2026.8.0", "workers": ["2026.8.0"]}}
workers:
  description: One entry per worker with its address, host name and node.
  returned: when step placement ran
  type: list
  elements: dict
  sample: [{"address": "tls://10.0.1.7:40123", "hostname": "3f2a9c1d", "node": "x0y1z2", "node_source": "DASK_SWARM_NODE_ID"}]
nodes:
  description: Number of workers per node.
  returned: when step placement ran
  type: dict
  sample: {"x0y1z2": 2, "q9w8e7": 1}
distinct_nodes:
  description: Number of distinct nodes the workers ran on.
  returned: when step placement ran
  type: int
version_mismatches:
  description: The version differences found, when O(check_versions=false) let the check go on.
  returned: when versions differ and O(check_versions=false)
  type: list
  elements: str
dashboard_link:
  description: The cluster's dashboard link.
  returned: when a cluster started
  type: str
dashboard_status:
  description: HTTP status of the dashboard link.
  returned: when step dashboard ran
  type: int
steps:
  description: The steps that ran, in order, with their duration in seconds and whether they passed.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "connect", "seconds": 0.021, "ok": true}, {"name": "scale", "seconds": 2.4, "ok": true}]
timings:
  description: Duration in seconds of each step that ran, by step name.
  returned: always
  type: dict
  sample: {"connect": 0.021, "options": 0.004, "create": 1.2, "scale": 2.4, "shutdown": 0.3}
total_seconds:
  description: Duration of the whole check in seconds.
  returned: always
  type: float
failed_step:
  description: The step that failed (C(connect), C(options), C(create), C(scale), C(compute), C(versions),
    C(placement), C(dashboard), C(shutdown) or C(cleanup)).
  returned: failure
  type: str
cleanup:
  description: Whether the cluster the module created was stopped in the end, and why not.
  returned: when a cluster was created
  type: dict
  sample: {"cluster": "4b9e1c0d2f8a4e7f9a1b2c3d4e5f6a7b", "stopped": true, "error": null}
"""

import getpass
import logging

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dask_swarm.gateway.plugins.module_utils.gateway_client import (
    AIOHTTP_IMPORT_ERROR,
    DASK_GATEWAY_IMPORT_ERROR,
    DEFAULT_NODE_ENV_VARS,
    DEFAULT_VERSION_PACKAGES,
    HAS_DASK_GATEWAY,
    GatewayCheck,
    basic_auth_header,
    make_gateway_factory,
    make_ssl_context,
    redact,
    run_check,
    secret_variants,
)


def argument_spec():
    return dict(
        address=dict(type="str", required=True),
        proxy_address=dict(type="str"),
        public_address=dict(type="str"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        cluster_options=dict(type="dict", default={}),
        workers=dict(type="int", default=2),
        timeout=dict(type="int", default=120),
        min_distinct_nodes=dict(type="int"),
        expect_worker_nodes=dict(type="list", elements="str", default=[]),
        node_env_vars=dict(type="list", elements="str", default=list(DEFAULT_NODE_ENV_VARS)),
        check_versions=dict(type="bool", default=True),
        version_packages=dict(type="list", elements="str", default=list(DEFAULT_VERSION_PACKAGES)),
        check_dashboard=dict(type="bool", default=True),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
    )


def login_name(params):
    """The user name basic auth sends: the option, else the local user."""
    if params["username"] is not None:
        return params["username"]
    if params["password"] is None:
        return None
    return getpass.getuser()


def dashboard_auth(params):
    """Credentials for the dashboard, sent only to the gateway's own origins."""
    if params["password"] is None:
        return None
    username = login_name(params)
    origins = [params["address"]] + ([params["public_address"]] if params["public_address"] else [])
    return {"origins": origins, "headers": basic_auth_header(username, params["password"])}


def build_check(module):
    params = module.params
    return GatewayCheck(
        gateway_factory=make_gateway_factory(
            params["address"],
            username=login_name(params),
            password=params["password"],
            proxy_address=params["proxy_address"],
            public_address=params["public_address"],
        ),
        workers=params["workers"],
        timeout=params["timeout"],
        cluster_options=params["cluster_options"],
        min_distinct_nodes=params["min_distinct_nodes"],
        expect_worker_nodes=params["expect_worker_nodes"],
        node_env_vars=params["node_env_vars"],
        check_versions=params["check_versions"],
        version_packages=params["version_packages"],
        check_dashboard=params["check_dashboard"],
        dashboard_auth=dashboard_auth(params),
        ssl_context=make_ssl_context(params["address"], params["validate_certs"], params["ca_path"]),
        check_mode=module.check_mode,
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params

    if not HAS_DASK_GATEWAY:
        module.fail_json(
            msg=missing_required_lib("dask-gateway"),
            exception=DASK_GATEWAY_IMPORT_ERROR or AIOHTTP_IMPORT_ERROR,
        )
    if params["workers"] < 1:
        module.fail_json(msg="workers must be at least 1, got %d" % params["workers"])
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %d" % params["timeout"])
    if params["min_distinct_nodes"] is not None and params["min_distinct_nodes"] > params["workers"]:
        module.fail_json(
            msg="min_distinct_nodes (%d) cannot exceed workers (%d)" % (params["min_distinct_nodes"], params["workers"])
        )

    # The libraries log to stderr; keep the module's output to its JSON result.
    for name in ("distributed", "dask_gateway", "asyncio", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    secrets = secret_variants(login_name(params), params["password"])
    for secret in secrets:
        # AnsibleModule masks these in everything exit_json/fail_json return.
        module.no_log_values.add(secret)

    result = redact(run_check(build_check(module)), secrets)
    for mismatch in result.get("version_mismatches", []):
        module.warn(mismatch)
    if "failed_step" in result:
        msg = result.pop("msg")
        module.fail_json(msg=msg, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
