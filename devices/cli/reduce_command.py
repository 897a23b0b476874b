"""``detpipe reduce``: argument handling and the progress bar around ``offline_reduction.reduce_series``."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.policy_document import policy_mapping
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.reduction_params import ReductionParams

tqdm.monitor_interval = 0  # no monitor thread: the bar is updated once per frame anyway


def load_policy_file(path: Path) -> ReductionParams:
    """A YAML (or JSON) mapping of DataPolicy parameters, validated like the device's attributes."""
    document = policy_mapping(path.read_text(encoding="utf-8"), str(path))
    return ReductionParams.from_mapping(document.get("data_policy", document))


def _advance(bar: tqdm, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def run_reduce(raw: Path, *, policy_file: Path | None, config_from: Path | None, output: Path) -> int:
    try:
        params = load_policy_file(policy_file) if policy_file is not None else read_reduction_config(config_from)[0]
        with tqdm(unit="frame", desc=f"reduce {raw.name}", file=sys.stderr) as bar:
            manifest = reduce_series(raw, params, output, progress=lambda done, total: _advance(bar, done, total))
    except (ConfigError, OSError, ValueError) as err:
        print(f"detpipe reduce: {err}", file=sys.stderr)
        return 2
    print(f"RED written; manifest {manifest}")
    return 0
