"""`--check` on the formed fleet (the scenario's check step) changes nothing.

Molecule's idempotence step proves a second real run reports changed=0;
this proves the same of a check-mode run, which is what `--check --diff`
shows an admin before a change. The run is found in the scenario's Ansible
log by its check-mode markers (check_mode_markers in config.yml).
"""

from __future__ import annotations

import re

from conftest import RECAP_LINE


def check_mode_recaps(log: str) -> list[dict[str, int]]:
    """The recap of every playbook run in the log whose plays ran in check mode."""
    runs = []
    # Each segment after a recap header starts with that recap's lines and
    # goes on with the next run's plays, up to the next header.
    segments = re.split(r"PLAY RECAP \**", log)
    for body, after in zip(segments, segments[1:]):
        if "[CHECK MODE]" in body.rsplit("PLAYBOOK:", 1)[-1]:
            runs.append({host: int(changed) for host, _, changed, _, _ in RECAP_LINE.findall(after)})
    return runs


def test_check_mode_on_the_formed_fleet_reports_no_change(ansible_log: str, fleet) -> None:
    runs = check_mode_recaps(ansible_log)
    assert runs, "the scenario's log holds no check-mode run (is the check step in the test sequence?)"
    last = runs[-1]
    assert set(fleet.nodes) <= set(last), f"the check run's recap lacks hosts: {last}"
    assert {host: changed for host, changed in last.items() if changed} == {}, last
