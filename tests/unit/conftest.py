"""Make the checkout importable as ansible_collections.dask_swarm.gateway."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
