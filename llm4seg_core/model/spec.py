"""The model spec: every choice that changes the network's shape or behaviour.

A spec is a small frozen dataclass. It is saved (as JSON) inside every
checkpoint, so a checkpoint always says how to rebuild the network it belongs
to, and a checkpoint is refused for a spec it does not match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from llm4seg_core.errors import LLM4SegError

LLM_MODES = ("pretrained", "random", "none")
"""How the bottleneck LLM layer is made: loaded from its source (the LLM4Seg
model), the same shape re-initialised at random (the "plain transformer"
ablation), or no LLM block at all (plain CMUNeXt)."""

POSITIONAL = ("rope2d", "reference1d")
ATTENTION = ("bidirectional", "causal")
INTENSITY = ("auto", "ct", "percentile")
PROMPT_CHANNELS = 4
"""Prompt input channels of a promptable model, after the image channels: positive-click
map, negative-click map, box map, guide mask (:mod:`llm4seg_core.prompts.encode`)."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an LLM4Seg network (weights aside).

    Defaults are the reference network (CMUNeXt dims/depths/kernels, binary
    sigmoid output) with our fixes: 2D rotary positions and bidirectional
    attention over the bottleneck tokens. The default LLM layer is layer 14 of
    the bundled SmolLM2-135M-Instruct, the layer index the reference uses.

    ``prompt_channels``: 0 for a segmentation model (every model before
    prompts); :data:`PROMPT_CHANNELS` for a promptable one, whose network
    takes the prompt maps after the image channels (:attr:`total_in_channels`).
    A spec with 0 writes no such field, so its JSON is what it always was.
    """

    llm_source: str = "smollm2"
    llm_layer: int = 14
    llm_mode: str = "pretrained"
    freeze_llm: bool = True
    positional: str = "rope2d"
    attention: str = "bidirectional"
    num_classes: int = 1
    in_channels: int = 1
    image_size: int = 256
    dims: tuple[int, ...] = (16, 32, 128, 160, 256)
    depths: tuple[int, ...] = (1, 1, 1, 3, 1)
    kernels: tuple[int, ...] = (3, 3, 7, 7, 7)
    intensity: str = "auto"
    label_names: tuple[str, ...] = field(default=())
    prompt_channels: int = 0

    def __post_init__(self) -> None:
        def bad(msg: str) -> LLM4SegError:
            return LLM4SegError(f"invalid model spec: {msg}")

        if self.llm_mode not in LLM_MODES:
            raise bad(f"llm_mode must be one of {LLM_MODES}, not {self.llm_mode!r}")
        if self.positional not in POSITIONAL:
            raise bad(f"positional must be one of {POSITIONAL}, not {self.positional!r}")
        if self.attention not in ATTENTION:
            raise bad(f"attention must be one of {ATTENTION}, not {self.attention!r}")
        if self.intensity not in INTENSITY:
            raise bad(f"intensity must be one of {INTENSITY}, not {self.intensity!r}")
        if self.num_classes < 1:
            raise bad("num_classes must be 1 (binary, sigmoid) or N+1 >= 2 (softmax with background)")
        if self.in_channels not in (1, 3):
            raise bad("in_channels must be 1 (grayscale) or 3 (RGB, or 3 neighbouring slices)")
        if not (len(self.dims) == len(self.depths) == len(self.kernels) == 5):
            raise bad("dims, depths and kernels must each have 5 entries")
        if self.image_size % 16:
            raise bad("image_size must be a multiple of 16 (four 2x2 poolings)")
        if self.llm_layer < 0:
            raise bad("llm_layer must be >= 0")
        if self.prompt_channels not in (0, PROMPT_CHANNELS):
            raise bad(f"prompt_channels must be 0 (no prompts) or {PROMPT_CHANNELS} (positive "
                      "clicks, negative clicks, box, guide mask)")
        if self.prompt_channels and self.num_classes != 1:
            raise bad("a prompt model segments one object: num_classes must be 1")

    @property
    def has_llm(self) -> bool:
        return self.llm_mode != "none"

    @property
    def is_prompt_model(self) -> bool:
        return self.prompt_channels > 0

    @property
    def total_in_channels(self) -> int:
        """The network's input channels: the image's (``in_channels``) and the prompt maps'."""
        return self.in_channels + self.prompt_channels

    @property
    def bottleneck_size(self) -> int:
        return self.image_size // 16

    @property
    def n_labels(self) -> int:
        """Number of foreground labels (1 for a binary model)."""
        return max(1, self.num_classes - 1) if self.num_classes > 1 else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if not d["prompt_channels"]:
            del d["prompt_channels"]  # specs written before prompts, byte for byte
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LLM4SegError(
                f"model spec has unknown fields {sorted(unknown)}: it was written by a newer "
                "llm4seg; upgrade llm4seg to use it"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LLM4SegError(f"model spec is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LLM4SegError("model spec must be a JSON object")
        return cls.from_dict(data)

    def with_(self, **changes: Any) -> ModelSpec:
        return replace(self, **changes)


PRESETS: dict[str, ModelSpec] = {
    "llm4seg": ModelSpec(),
    "cmunext": ModelSpec(llm_mode="none"),
    "random-layer": ModelSpec(llm_mode="random"),
    "reference": ModelSpec(positional="reference1d", attention="causal"),
    "llama-3.2-1b": ModelSpec(llm_source="meta-llama/Llama-3.2-1B", llm_layer=14),
    "deepseek-r1-qwen-1.5b": ModelSpec(
        llm_source="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", llm_layer=27
    ),
    # promptable and class-agnostic (issue 13; llm4seg_core.prompts), saved as task "prompt"
    # (a task is never named as a preset, so these two are not called "prompt")
    "prompt-llm4seg": ModelSpec(image_size=128, in_channels=1, prompt_channels=PROMPT_CHANNELS),
    "prompt-cmunext": ModelSpec(llm_mode="none", image_size=128, in_channels=1,
                                prompt_channels=PROMPT_CHANNELS),
}
"""Named specs accepted wherever a spec is asked for (CLI ``--model``)."""


def parse_spec(text: str | None) -> ModelSpec:
    """A spec from a preset name, a JSON object, or ``key=value,key=value`` overrides.

    ``llama-3.2-1b,num_classes=3`` starts from a preset and overrides fields.
    """
    if not text:
        return ModelSpec()
    text = text.strip()
    if text.startswith("{"):
        return ModelSpec.from_json(text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    base = ModelSpec()
    if parts and "=" not in parts[0]:
        name = parts.pop(0)
        if name not in PRESETS:
            raise LLM4SegError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
        base = PRESETS[name]
    changes: dict[str, Any] = {}
    types = {f.name: f.type for f in fields(ModelSpec)}
    for part in parts:
        if "=" not in part:
            raise LLM4SegError(f"cannot read {part!r} in the model spec: use key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in types:
            raise LLM4SegError(f"unknown model spec field {key!r}; known: {', '.join(types)}")
        current = getattr(base, key)
        try:
            if isinstance(current, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                changes[key] = value.lower() in ("true", "1", "yes")
            elif isinstance(current, int):
                changes[key] = int(value)
            elif isinstance(current, tuple):
                changes[key] = tuple(
                    int(v) if key != "label_names" else v for v in value.split(":") if v
                )
            else:
                changes[key] = value
        except ValueError:
            raise LLM4SegError(f"bad value {value!r} for model spec field {key!r}") from None
    return replace(base, **changes)
