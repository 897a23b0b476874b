"""``detpipe reduce``: argument handling and the progress around ``offline_reduction.reduce_series``."""

from __future__ import annotations

from pathlib import Path

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.settings_document import settings_mapping
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.reduction_params import ReductionParams

from .progress import Progress
from .user_error import UserError


def load_policy_file(path: Path) -> ReductionParams:
    """A YAML (or JSON) mapping of DataPolicy parameters, validated like the device's attributes."""
    document = settings_mapping(path.read_text(encoding="utf-8"), str(path), "data policy parameters")
    return ReductionParams.from_mapping(document.get("data_policy", document))


def run_reduce(raw: Path, *, policy_file: Path | None, config_from: Path | None, output: Path) -> int:
    progress = Progress(f"reduce {raw.name}", "frame")
    try:
        params = load_policy_file(policy_file) if policy_file is not None else read_reduction_config(config_from)[0]
        manifest = reduce_series(raw, params, output, progress=progress)
    except (ConfigError, OSError, ValueError) as err:  # each says which file or parameter, in one line
        raise UserError(str(err)) from err
    finally:
        progress.close()
    print(f"RED written; manifest {manifest}")
    return 0
