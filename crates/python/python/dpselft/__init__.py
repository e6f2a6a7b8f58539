"""dpselft: differentially private selective fine-tuning of transformer language models.

Each function runs the `dpselft` command of the same name in-process (the same argument parser
and the same code as the command line) and returns what the command prints with ``--json``, as
a dict. Keyword arguments are the command's options: ``batch_size=256`` is ``--batch-size 256``,
``non_private=True`` is ``--non-private``; ``False`` and ``None`` leave an option out.

    import dpselft
    summary = dpselft.train(model="minilm", data="train.jsonl", out="runs/x", epsilon=3.0,
                            progress=lambda p: print(p["step"], p["epsilon"]))
    metrics = dpselft.eval(model="runs/x", data="test.jsonl")
    print(dpselft.ledger("runs/x")["epsilon"])

``progress`` receives one dict per training step: step, total_steps, epoch, examples_per_s,
eta_s and epsilon (ε spent so far; ``None`` for a non-private run). It carries nothing computed
from private examples without noise, so it may be logged.
"""

import json
import os
from typing import Any, Callable, Dict, List, Optional

from ._native import DpselftError, __version__, invoke

__all__ = ["DpselftError", "__version__", "account", "eval", "ledger", "run", "train"]

Progress = Optional[Callable[[Dict[str, Any]], None]]


def _options(kwargs: Dict[str, Any]) -> List[str]:
    """Keyword arguments as command-line options."""
    argv: List[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, _text(item)]
        else:
            argv += [flag, _text(value)]
    return argv


def _text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return repr(value)  # every digit, as Python would read it back
    return str(value)


def _call(command: List[str], kwargs: Dict[str, Any], progress: Progress = None) -> Dict[str, Any]:
    hook = None
    if progress is not None:
        def hook(text: str) -> None:
            progress(json.loads(text))
    outputs = invoke(command + _options(kwargs) + ["--json"], hook)
    if not outputs:
        raise DpselftError(f"dpselft {command[0]} printed no result")
    return json.loads(outputs[-1])


def train(*, progress: Progress = None, **kwargs: Any) -> Dict[str, Any]:
    """``dpselft train``: DP fine-tuning (or ``non_private=True``). Returns the run's summary."""
    return _call(["train"], kwargs, progress)


def run(*, progress: Progress = None, **kwargs: Any) -> Dict[str, Any]:
    """``dpselft run``: DP-SelFT end to end (no arguments: the built-in default). Returns the
    run's metrics (``metrics.json``)."""
    return _call(["run"], kwargs, progress)


def eval(**kwargs: Any) -> Dict[str, Any]:  # noqa: A001 (the command's name)
    """``dpselft eval``: accuracy and macro-F1, or perplexity, on held-out data."""
    return _call(["eval"], kwargs)


def account(**kwargs: Any) -> Dict[str, Any]:
    """``dpselft account``: ε for a noise multiplier (``sigma=``), or the noise multiplier for a
    target ε (``target_epsilon=``)."""
    return _call(["account"], kwargs)


def ledger(path: "os.PathLike[str] | str") -> Dict[str, Any]:
    """``dpselft ledger``: a run's privacy ledger (a run folder or its ``ledger.json``), every
    entry validated and the totals recomputed: epsilon, delta, lost_epsilon, spent, entries."""
    return _call(["ledger", _text(path)], {})
