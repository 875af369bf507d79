"""A Llama-style model (rotary positions, taken from position_ids) in the batched engine: a tiny
randomly initialised transformers LlamaForCausalLM saved next to the tiny run's tokenizer, with a
chat template so that /v1/chat/completions has something to render."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from tests.serve.conftest import running_server
from tests.serve.test_completions import LONG, MATES, SHORT, generate_cli

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
pytestmark = pytest.mark.slow  # a third model server and two glotta generate runs: ~1 min


@pytest.fixture(scope="module")
def llama_server(tiny_run, tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    _, run_dir = tiny_run
    folder = tmp_path_factory.mktemp("llama") / "tiny-llama"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    # Random weights give near-uniform logits; scaling the embeddings up makes the greedy path
    # depend on the context (a stronger check that padding and positions are right).
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(20)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (run_dir.export / name).is_file():
            shutil.copy(run_dir.export / name, folder / name)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    with running_server(folder, tmp_path_factory.mktemp("llama-log"), "--max-batch", "6") as s:
        yield s


def test_llama_greedy_in_a_batch_equals_glotta_generate(llama_server):
    client = openai.OpenAI(base_url=llama_server.url + "/v1", api_key="unused", max_retries=0)
    flags = ["--temperature", "0", "--max-new-tokens", "24", "--repetition-penalty", "1.0"]
    expected = {p: generate_cli(llama_server, p, *flags) for p in (SHORT, LONG)}

    def complete(prompt: str, **kwargs):
        return client.completions.create(model=llama_server.model, prompt=prompt, **kwargs)

    for _attempt in range(5):
        with ThreadPoolExecutor(len(MATES) + 2) as pool:
            mates = [pool.submit(complete, m, max_tokens=60, temperature=1.0, seed=i)
                     for i, m in enumerate(MATES)]  # fmt: skip
            greedy = {p: pool.submit(complete, p, max_tokens=24, temperature=0)
                      for p in (SHORT, LONG)}  # fmt: skip
            results = {p: f.result() for p, f in greedy.items()}
            [m.result() for m in mates]
        for prompt, result in results.items():
            assert result.choices[0].text == expected[prompt], prompt
        peaks = [r.to_dict()["glotta"]["batch_peak"][0] for r in results.values()]
        if min(peaks) >= 3:
            return
    pytest.fail(f"the greedy requests never shared a batch with two others (peaks {peaks})")


def test_chat_renders_the_template_and_streams(llama_server):
    client = openai.OpenAI(base_url=llama_server.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Привет"}]
    chat = client.chat.completions.create(
        model=llama_server.model, messages=messages, max_tokens=10, temperature=0
    )
    plain = client.completions.create(
        model=llama_server.model, prompt="user: Привет\nassistant:", max_tokens=10, temperature=0
    )
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens
    stream = client.chat.completions.create(
        model=llama_server.model, messages=messages, max_tokens=10, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == plain.choices[0].text
