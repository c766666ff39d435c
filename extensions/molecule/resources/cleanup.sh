#!/bin/sh
# Remove every container, volume and network carrying a fleet label: the
# safety net after an interrupted Molecule run (scripts/run-tests.sh calls it
# at its end with its run's label).
#
#   cleanup.sh                                  everything any Molecule scenario made,
#                                               by hand or by any test run
#   cleanup.sh dask_swarm.gateway.molecule=ha   one scenario, of every run
#   cleanup.sh dask_swarm.gateway.test-run=ID   what one run of run-tests.sh made
#                                               (DASK_SWARM_TEST_RUN=ID)
#   cleanup.sh dask_swarm.gateway.fleet=NAME    one fleet (e.g. the sandbox)
#
# The labels are defined in node.yml. The node image is kept (it is a cache,
# rebuilt only when node/ changes).
set -u

filter="label=${1:-dask_swarm.gateway.molecule}"
status=0

containers=$(docker ps -aq --filter "$filter") || exit 1
if [ -n "$containers" ]; then
    # shellcheck disable=SC2086  # one argument per ID
    docker rm -f -v $containers >/dev/null || status=1
fi

volumes=$(docker volume ls -q --filter "$filter") || exit 1
if [ -n "$volumes" ]; then
    # shellcheck disable=SC2086
    docker volume rm -f $volumes >/dev/null || status=1
fi

networks=$(docker network ls -q --filter "$filter") || exit 1
if [ -n "$networks" ]; then
    # shellcheck disable=SC2086
    docker network rm $networks >/dev/null || status=1
fi

left=$(docker ps -aq --filter "$filter"; docker volume ls -q --filter "$filter"; docker network ls -q --filter "$filter")
if [ -n "$left" ]; then
    echo "cleanup.sh: not removed ($filter):" $left >&2
    status=1
fi
exit "$status"
