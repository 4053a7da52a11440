"""A tiny random-weight Llama and its 300-token BPE tokenizer, built locally (nothing downloaded):
the model the LLM tests and bench serve on vLLM. Deterministic for a seed.

Runs in the vLLM virtualenv (transformers and tokenizers live there, not in the main one):
    .venv-vllm/bin/python -m ml_assets_testing.tiny_llm OUT_DIR:SEED [OUT_DIR:SEED ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

VOCAB = 300
CORPUS = [  # enough distinct text for ~40 merges beyond the 256 bytes; fixed, so deterministic
    "the customer asked about the churn model and the platform answered quickly",
    "a tenant serves its production model behind its own route with its own key",
    "tokens per second and time to first token are measured for every request",
    "hello world, this is a tiny language model with random weights",
] * 8
# the chat endpoint needs a template; this is the simplest one vLLM accepts
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def build(out: Path, seed: int = 0) -> Path:
    """Write a Hugging Face format directory (config, safetensors, tokenizer) to `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>",
                                        eos_token="</s>", pad_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, torch_dtype="float32")
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


def build_with(python: str, models: dict[Path, int]) -> dict[Path, int]:
    """Build {directory: seed} in the interpreter that has transformers (the vLLM venv), in one
    process: importing transformers is most of the time."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([python, "-m", "ml_assets_testing.tiny_llm",
                    *[f"{out}:{seed}" for out, seed in models.items()]],
                   cwd=root, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"})
    return models


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="OUT_DIR:SEED")
    for spec in parser.parse_args().models:
        out, _, seed = spec.rpartition(":")
        build(Path(out), int(seed))
