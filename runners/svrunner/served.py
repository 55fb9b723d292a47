"""A served model (`backend = "vllm"`): its checkpoint served by vLLM in the engine env, its
samples asked through VLMEvalKit's own client for served models with many requests in flight.

The worker starts the engine server (svrunner.serve) on the checkpoint once, then hands
VLMEvalKit a `Served` model: `vlmeval.api.LMDeployWrapper` (an OpenAI-protocol client, an API
model to VLMEvalKit, so its `infer_data` sends `api_nproc` requests at once) that
- builds the messages the model's own wrapper would (`prompter`: its `use_custom_prompt` /
  `build_prompt` for the dataset; without one, the dataset's prompt, as the wrapper would);
- asks greedily for the wrapper's `max_new_tokens` (serve.client_kwargs);
- sends images as file paths inside LMUData (`local_media`): the server reads the benchmark's
  own bytes, not a JPEG re-encoding;
- checks the server before every sample and after every failed answer, so a server that died
  fails the unit with its last lines instead of VLMEvalKit's retries filling it with failures.

The built-in demo's wrapper is the prompter (it loads in milliseconds and trains the checkpoint
the server loads); its template is given to the server as a chat template (`DEMO_TEMPLATE`), so
the served model reads exactly the token sequence the wrapper builds. For other models the
worker does not load the weights a second time: the dataset's prompts are used, and the
`prompt_source` of each pair says "dataset" (a wrapper with prompts of its own says so).
"""

from __future__ import annotations

import os
from typing import Any

from . import serve
from .files import write_atomic

# The demo wrapper's text (demo/prompts.py wrapper_text) after its <s>: vLLM joins the text
# parts with "\n" and puts the image placeholder first ("<image>\n..."), as the wrapper does.
DEMO_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% if m['content'].startswith('<image>') %}USER: {% else %}USER:\n{% endif %}"
    "{{ m['content'] }}\nASSISTANT:{% endif %}{% endfor %}"
)
DEMO_MAX_MODEL_LEN = 512  # the demo's prompts are ~15 tokens with the image
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NEW_TOKENS = 512  # VLMEvalKit's usual default where a wrapper names none


def engine_spec(job: dict[str, Any], checkpoint: str, demo: bool) -> serve.EngineSpec:
    """What the server serves: the demo in float32 (as it was trained) with its template."""
    python = (job.get("engine") or {}).get("python")
    if not python:
        raise ValueError(
            "the job file names no engine Python for a served model (job['engine']['python'])"
        )
    common = dict(python=python, model=checkpoint, media_root=job["data_root"], enforce_eager=True)
    if not demo:
        return serve.EngineSpec(**common, max_model_len=DEFAULT_MAX_MODEL_LEN)
    template = os.path.join(job["work_dir"], ".engine", "demo_chat_template.jinja")
    os.makedirs(os.path.dirname(template), exist_ok=True)
    write_atomic(template, DEMO_TEMPLATE)
    return serve.EngineSpec(**common, max_model_len=DEMO_MAX_MODEL_LEN, dtype="float32", limit_images=1,
                            chat_template=template)  # fmt: skip


def max_new_tokens(prompter: Any, kwargs: dict[str, Any]) -> int:
    """The wrapper's generation budget: its attribute, else its kwargs, else VLMEvalKit's default."""
    value = getattr(prompter, "max_new_tokens", None) or kwargs.get("max_new_tokens")
    return int(value or DEFAULT_MAX_NEW_TOKENS)


def make_client_class() -> type:
    """`Served`: LMDeployWrapper with the wrapper's prompts and a server check (made when first
    asked for: its base comes from VLMEvalKit, which only the env has)."""
    from vlmeval.api import LMDeployWrapper

    class Served(LMDeployWrapper):
        def __init__(self, server: serve.Server, prompter: Any, **kwargs: Any) -> None:
            super().__init__(local_media=True, **kwargs)
            self.server, self.prompter = server, prompter

        def use_custom_prompt(self, dataset: str) -> bool:
            return self.prompter is not None and bool(self.prompter.use_custom_prompt(dataset))

        def build_prompt(self, line: Any, dataset: str | None = None) -> Any:
            return self.prompter.build_prompt(line, dataset=dataset)

        def generate(self, message: Any, dataset: str | None = None, **kw: Any) -> Any:
            self.server.check()  # raises with the server's last lines: the unit fails
            answer = super().generate(message, dataset=dataset, **kw)
            if isinstance(answer, str) and self.fail_msg in answer:
                self.server.check()  # a failed answer from a dead server is the server's failure
            return answer

    return Served


def client(server: serve.Server, prompter: Any, new_tokens: int, max_model_len: int) -> Any:
    """The worker's model: VLMEvalKit sends it `api_nproc` samples at once (an API model)."""
    kwargs = serve.client_kwargs(server, new_tokens, max_model_len)
    return make_client_class()(server, prompter, **kwargs)


def prompt_source(model: Any, dataset: str) -> str:
    """Whose prompt a pair's samples get: the model wrapper's own, or the dataset's."""
    try:
        custom = bool(model.use_custom_prompt(dataset))
    except Exception:
        custom = False
    return "model" if custom else "dataset"


def generation_facts(model: Any, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """How a local wrapper generates, as far as it tells (attributes or kwargs); None if silent."""
    found: dict[str, Any] = {}
    own = getattr(model, "kwargs", None)
    for source in (
        kwargs,
        own if isinstance(own, dict) else {},
        vars(model) if hasattr(model, "__dict__") else {},
    ):
        for key in ("max_new_tokens", "do_sample", "temperature", "num_beams", "top_p"):
            if key in source and isinstance(source[key], (int, float, bool, str)):
                found.setdefault(key, source[key])
    return found or None
