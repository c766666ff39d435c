# One entry point. `make test` on a fresh Debian machine installs what it
# needs (Docker Engine, .venv, a base image) and runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup lock demo demo-down test lint unit backend molecule docs

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## Install Docker Engine, the locked Python environment (.venv) and a base image when missing
	@scripts/host-setup.sh

lock: setup  ## Re-resolve requirements.txt, client/ and image/requirements.txt together from their .in files
	@.venv/bin/python scripts/lock.py

demo: setup  ## A local sandbox fleet (MANAGERS=1 WORKERS=2 PORT=8000) running the gateway; JUPYTERHUB=1 adds the hub (HUB_PORT=PORT+1); prints how to connect
	@scripts/sandbox.sh up

demo-down: setup  ## Remove every container, network and volume of the sandbox fleet
	@scripts/sandbox.sh down

# No `setup` prerequisite: run-tests.sh runs it as its first stage, so a
# failed set-up still ends with the summary line.
test:  ## Set up, then run everything: lint, sanity, unit, modules, client, backend, the Molecule scenarios, the quick start
	@scripts/run-tests.sh

lint: setup  ## yamllint, ansible-lint (production profile), changelog lint
	@scripts/run-tests.sh lint

unit: setup  ## Unit tests of the plugins and role conventions
	@scripts/run-tests.sh unit

backend: setup  ## The Swarm backend's unit and integration tests
	@scripts/run-tests.sh backend

molecule: setup  ## The Molecule scenarios (default: 1 manager + 2 workers; ha: 3 + 1; hetero: x86_64 and an arm64 Pi)
	@scripts/run-tests.sh molecule-default molecule-ha molecule-hetero

docs: setup  ## Regenerate the role READMEs from meta/argument_specs.yml
	@.venv/bin/python scripts/role_docs.py
