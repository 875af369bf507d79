"""Run an exported GGUF with llama.cpp itself, in process, through ``xllamacpp`` (the ``llama``
extra): tokenize, next-token log-probabilities, greedy generation. The tests use it to prove that
a GGUF gives the HF folder's token ids and predictions; ``benchmarks/gguf_speed.py`` to time it.

xllamacpp embeds llama.cpp's server: completions are a Python call
(``Server.handle_completions``), and the endpoints it has no Python method for (``/tokenize``)
are reached over its loopback HTTP address.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from glotta.errors import GlottaError


class LlamaCpp:
    """One GGUF loaded by llama.cpp; ``threads`` CPU threads, a context of ``n_ctx`` tokens.

    ``exact``: keys and values in f32 and no flash attention (llama.cpp's defaults, an f16
    cache and flash attention with f16 products, alone move log-probabilities by ~5e-3), to
    compare an f32 GGUF with transformers in full precision.
    """

    def __init__(self, gguf_path: Path, n_ctx: int = 0, threads: int = 1, exact: bool = False):
        try:
            import xllamacpp
        except ImportError:
            raise GlottaError(
                "running a GGUF needs xllamacpp: pip install 'glotta[llama]'"
            ) from None
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_path)
        params.n_ctx = n_ctx  # 0: the model's context length
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        if exact:
            params.cache_type_k = xllamacpp.ggml_type.GGML_TYPE_F32
            params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
            params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        # A prompt that repeats an earlier one must be evaluated anew, not served from the
        # cache, so that each call measures and reports the same computation.
        params.cache_prompt = False
        self._server = xllamacpp.Server(params)
        self._address = self._server.listening_address
        self._ascii_token: int | None = None

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        """Token ids of ``text`` without added bos/eos; special tokens in the text are parsed
        (as ``tokenizers`` does for its special added tokens) unless ``parse_special`` is off."""
        body = {"content": text, "add_special": False, "parse_special": parse_special}
        request = urllib.request.Request(
            self._address + "/tokenize",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["tokens"]

    def complete(
        self, prompt_ids: list[int], max_tokens: int, top_logprobs: int = 0, **extra
    ) -> dict:
        """Greedy continuation of ``prompt_ids`` (the server's OpenAI-style completion dict)."""
        request = {"prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0.0, **extra}
        if top_logprobs:
            request["logprobs"] = top_logprobs
        result = self._server.handle_completions(request)
        if "error" in result:
            raise GlottaError(f"llama.cpp: {result['error']}")
        return result

    def next_token_logprobs(self, prompt_ids: list[int], top: int) -> list[tuple[int, float]]:
        """The ``top`` most likely next tokens after ``prompt_ids`` with their log-probabilities
        (llama.cpp's softmax of the raw logits, before any sampling)."""
        # The server reports log-probabilities only with the text of the token it samples, and
        # holds back a token that ends inside a UTF-8 character (it then reports none). So the
        # sampled token is forced to a plain ASCII one by a logit bias: the bias acts in the
        # sampler, while the reported log-probabilities come from the raw logits.
        if self._ascii_token is None:
            self._ascii_token = self.tokenize("a", parse_special=False)[-1]
        result = self.complete(prompt_ids, 1, top, logit_bias={str(self._ascii_token): 100.0})
        content = result["choices"][0]["logprobs"]["content"][0]
        return [(entry["id"], entry["logprob"]) for entry in content["top_logprobs"]]
