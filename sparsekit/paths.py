"""The one place artifact file names are spelled."""

from __future__ import annotations

from pathlib import Path


def run_json(run_dir: Path) -> Path:
    return Path(run_dir) / "run.json"


def theta_k(run_dir: Path) -> Path:
    """Weights (and BN buffers) at the rewind point, the ticket's starting weights."""
    return Path(run_dir) / "theta_k.safetensors"


def mask(run_dir: Path) -> Path:
    return Path(run_dir) / "mask.safetensors"


def final_weights(run_dir: Path) -> Path:
    """The fine-tuned ticket (exactly zero where the mask is 0)."""
    return Path(run_dir) / "final.safetensors"


def dense_weights(run_dir: Path) -> Path:
    """Dense reference: same starting weights, same training budget, no mask."""
    return Path(run_dir) / "dense.safetensors"


def search_state(run_dir: Path) -> Path:
    """Buffers a search method sets on the ticket (e.g. BN statistics of the masked net), applied over theta_K."""
    return Path(run_dir) / "search_state.safetensors"


def search_log(run_dir: Path) -> Path:
    """Per-step search diagnostics as JSON lines."""
    return Path(run_dir) / "search.jsonl"


def metrics_log(run_dir: Path) -> Path:
    """Per-epoch training metrics as JSON lines."""
    return Path(run_dir) / "metrics.jsonl"


def round_dir(run_dir: Path, round_index: int) -> Path:
    """Per-round tickets of iterative methods (ltr)."""
    return Path(run_dir) / "rounds" / f"round_{round_index:02d}"


def round_json(run_dir: Path, round_index: int) -> Path:
    return round_dir(run_dir, round_index) / "round.json"


def checkpoint(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{stage}.safetensors"


def checkpoint_meta(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{stage}.json"


def converted(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / "converted" / fmt


def converted_weights(run_dir: Path, fmt: str) -> Path:
    """Weights of a converted model (safetensors; structured: the smaller architecture's state)."""
    return converted(run_dir, fmt) / "weights.safetensors"


def converted_meta(run_dir: Path, fmt: str) -> Path:
    """Format, options, rebuild plan and conversion report (JSON, written last)."""
    return converted(run_dir, fmt) / "format.json"
