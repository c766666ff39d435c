"""The README's Python example, run with the stock client against a real gateway.

The stock client can deadlock a process: a refused ``new_cluster()`` leaves a
half-built cluster in a reference cycle, and when Python's cycle collector
frees it on the client's event-loop thread, its ``Gateway.__del__`` waits on
that same loop for ever. The README's example guards against it with context
managers and a ``gc.collect()`` on the caller's thread after the refusal.

These tests take the example out of the README (the block after the
``tested:`` marker), point it at a local dask-gateway-server, and force the
collector to run on the loop thread right after the example's guard: the
example must finish. Without the guard the same run must hang, which shows
that the guard, and not luck, is what keeps it alive.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MARKER = "<!-- tested: tests/integration/client/test_client_patterns.py -->"
README_ADDRESS = '"https://192.0.2.11:8000"'
README_PASSWORD_FILE = '"~/.dask_swarm_gateway/dask-gateway.password"'
GUARD = "gc.collect()"

# Runs the collector on the client's event-loop thread, as any allocation
# there may do at any time; then says so.
PROBE = """
def collect_on_the_loop(gateway):
    import gc

    async def collect():
        gc.collect()

    gateway.sync(collect)
    print("collected on the loop thread", flush=True)
"""
# Dumps every thread's stack before the test gives up on a hung run.
WATCHDOG = "import faulthandler, sys\nfaulthandler.dump_traceback_later(%d, exit=True, file=sys.stderr)\n"


def readme_example():
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README.md lost the tested example's marker"
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, "no python block after the marker"
    code = match.group(1)
    for needle in (README_ADDRESS, README_PASSWORD_FILE, GUARD):
        assert needle in code, "the README example no longer contains %s" % needle
    return code


def guarded_lines(code):
    """The example's lines; the index of the guard line."""
    lines = code.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.strip().startswith(GUARD)]
    return lines, index


def run_example(server, tmp_path, code, hang_after=None):
    password_file = tmp_path / "password"
    password_file.write_text(server.password + "\n")
    password_file.chmod(0o600)
    code = code.replace(README_ADDRESS, repr(server.address)).replace(README_PASSWORD_FILE, repr(str(password_file)))
    script = tmp_path / "example.py"
    script.write_text((WATCHDOG % hang_after if hang_after else "") + PROBE + code)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)


def with_probe(code, keep_guard):
    lines, i = guarded_lines(code)
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    probe = indent + "collect_on_the_loop(gateway)"
    lines[i : i + 1] = [lines[i], probe] if keep_guard else [probe]
    return "\n".join(lines) + "\n"


def assert_example_output(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused: 'large' is not a valid option for profile" in result.stdout, result.stdout
    assert "\n4950\n" in result.stdout, result.stdout


def test_the_readme_example_runs_and_leaves_no_cluster(server, tmp_path):
    result = run_example(server, tmp_path, readme_example())
    assert_example_output(result)
    assert server.clusters() == {}


def test_the_example_survives_a_collection_on_the_loop_thread(server, tmp_path):
    result = run_example(server, tmp_path, with_probe(readme_example(), keep_guard=True))
    assert "collected on the loop thread" in result.stdout, result.stdout + result.stderr
    assert_example_output(result)


def test_without_the_guard_the_same_run_hangs_in_gateway_del(server, tmp_path):
    result = run_example(server, tmp_path, with_probe(readme_example(), keep_guard=False), hang_after=20)
    assert "refused:" in result.stdout, result.stdout + result.stderr
    assert "collected on the loop thread" not in result.stdout
    assert result.returncode != 0
    # The troubleshooting entry tells users to look for exactly this stack.
    assert "Timeout (0:00:20)!" in result.stderr, result.stderr
    assert re.search(r'File ".*dask_gateway/client\.py", line \d+ in __del__', result.stderr), result.stderr


@pytest.fixture(autouse=True)
def _no_cluster_left(server):
    yield
    assert server.clusters() == {}, "a test left a cluster running"
