"""What `atom sample` samples from: a model from a run folder (default: the newest under
outputs/runs/) or from Hugging Face GPT-2 weights, and a prompt from text or FILE:path.
The sampling itself is the decode loop of engine.py, the same one the notebooks and the chat call.
"""

from __future__ import annotations

from pathlib import Path

from atomlib.data.tokenizer import GPT2Tokenizer
from atomlib.device import pick_device
from atomlib.errors import AtomError
from atomlib.model.checkpoint import load_run
from atomlib.model.gpt import GPT
from atomlib.paths import resolve_run

DEFAULT_PROMPT = "\n"  # nanoGPT's sample.py starts from a newline too


def load_for_sampling(run=None, init_from: str | None = None, device: str = "auto"):
    """(model in eval mode, tokenizer, description) from a run folder (default: the newest under
    outputs/runs/) or from Hugging Face GPT-2 weights (a hub name or a save_pretrained folder)."""
    if run is not None and init_from:
        raise AtomError("pass either --run DIR or --init-from NAME, not both.")
    if init_from:
        model = GPT.from_pretrained(init_from)
        model.to(pick_device(device)).eval()
        return model, GPT2Tokenizer(), f"GPT-2 weights {init_from}"
    run = resolve_run(run)
    model, tokenizer, state = load_run(run, device=device)
    return model, tokenizer, f"run {run} (step {state.get('step')})"


def read_prompt(spec: str | None) -> str:
    """--prompt TEXT, or FILE:path for a file's contents; None gives the default prompt."""
    if spec is None:
        return DEFAULT_PROMPT
    if spec.startswith("FILE:"):
        path = Path(spec[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AtomError(f"cannot read the prompt file {path} ({type(e).__name__}); "
                            "check the path after FILE:.") from None
    return spec
