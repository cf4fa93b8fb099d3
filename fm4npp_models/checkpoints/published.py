"""The released FM4NPP backbones (`pp_nerf_m*_k30.ckpt`, the PP_collision code's `MambaGPT`) as our Backbone.

A released file is a `torch.save` of a dict: `model_state` (the state dict, its keys possibly prefixed `module.`),
`iters`, `epoch`, `optimizer_state_dict` and `scheduler_state_dict`. Only `model_state` is used; `iters` and `epoch`
are reported. It is read with `torch.load(weights_only=True)`: tensors, numbers, strings and containers only, so a
file that holds anything else (an object whose loading would run code) is refused, never unpickled. A bare state
dict is accepted too. No config is stored: every size is read off the shapes. The keys, with D the width, d_inner =
expand D (2D), H the heads (d_inner / headdim), N the state size (ngroups 1), K the conv kernel (4), k the neighbours:

    published key                           shape                  ours
    embedder.proj                           (1, D)                 embedding.energy      (e, frozen random)
    embedder.embed.projection               (63, D)                embedding.position    (P, frozen random)
    mamba_layers.{i}.0.weight               (D,)                   blocks.{i}.norm.weight
    mamba_layers.{i}.1.in_proj.weight       (2 d_inner + H, D)     \\
    mamba_layers.{i}.1.lin_B.weight         (N, D)                  > blocks.{i}.mixer.in_proj.weight
    mamba_layers.{i}.1.lin_C.weight         (N, D)                 /
    mamba_layers.{i}.1.X                                           blocks.{i}.mixer.X  for X in dt_bias, A_log, D (H,),
                                                                   conv1d.weight (d_inner + 2N, 1, K), conv1d.bias,
                                                                   norm.weight (d_inner,), out_proj.weight (D, d_inner)
    output_layer.weight, output_layer.bias  (3k, D), (3k,)         head.weight, head.bias
    norm.weight                             (D,)                   norm_f.weight

The only real change is in_proj. The published mixer computes B and C with their own projections and its in_proj has
the rows [z, x, dt]; the fused kernel it was trained with is called on the concatenation [z, x, B, C, dt], which is
the stock mamba_ssm in_proj that our Mamba2 has. So ours = cat(in_proj[:2 d_inner], lin_B, lin_C, in_proj[2 d_inner:]).
The conv channels are [x, B, C] in both. Any key missing or unknown, or any shape that does not fit the sizes read
off embedder.proj and layer 0, is an error naming the key; the result must then give exactly our state dict.

The model is built with dropout 0.0: pretraining used 0.1, but an imported backbone is for frozen use, as in the
published downstream code. chunk_size is 256, as there (it does not change the function).

Naming trap: the release names its files by the repository's sizes, which are not the paper's. pp_nerf_m1_k30.ckpt
is the paper's m3 (width 256; 4,923,386 parameters), m3 is m4 (512), m4 is m5 (1024) and m5 is m6 (1536); the paper's
m1 and m2 were not released. `paper_size(config)` gives the paper's name of an architecture.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fm4npp_data.errors import RunError

from ..model.config import SIZES, BackboneConfig
from .run import _some

#: The release's file size names (pp_nerf_{name}_k30.ckpt) -> the paper's size names.
RELEASE_TO_PAPER = {"m1": "m3", "m3": "m4", "m4": "m5", "m5": "m6"}
CHUNK_SIZE = 256
N_POSITION = 63  # the NeRF encoding's width: 3 + 10 frequencies x (sin, cos) x 3 coordinates
LAYER_KEYS = (
    "0.weight",
    "1.dt_bias",
    "1.A_log",
    "1.D",
    "1.in_proj.weight",
    "1.lin_B.weight",
    "1.lin_C.weight",
    "1.conv1d.weight",
    "1.conv1d.bias",
    "1.norm.weight",
    "1.out_proj.weight",
)
OTHER_KEYS = ("embedder.proj", "embedder.embed.projection", "output_layer.weight", "output_layer.bias", "norm.weight")
#: The keys that are only renamed (the in_proj, lin_B and lin_C of each layer are merged).
RENAMED = {
    "embedder.proj": "embedding.energy",
    "embedder.embed.projection": "embedding.position",
    "output_layer.weight": "head.weight",
    "output_layer.bias": "head.bias",
    "norm.weight": "norm_f.weight",
}
RENAMED_IN_LAYER = {
    "0.weight": "norm.weight",
    **{
        f"1.{x}": f"mixer.{x}"
        for x in ("dt_bias", "A_log", "D", "conv1d.weight", "conv1d.bias", "norm.weight", "out_proj.weight")
    },
}
_LAYER = re.compile(r"^mamba_layers\.(\d+)\.")


@dataclass
class PublishedCheckpoint:
    """What a released file holds that we use: its state dict (the `module.` prefix stripped), iters and epoch."""

    state: dict[str, torch.Tensor]
    iters: int | None = None
    epoch: int | None = None


@dataclass(frozen=True)
class Sizes:
    """The sizes read off a published state dict (names as in the module docstring)."""

    d_model: int
    n_layers: int
    d_inner: int
    nheads: int
    d_state: int
    d_conv: int
    outputs: int  # 3k

    def describe(self) -> str:
        return (
            f"D = {self.d_model}, d_inner = {self.d_inner}, H = {self.nheads}, N = {self.d_state}, "
            f"K = {self.d_conv}, 3k = {self.outputs}"
        )


# --- reading a file ----------------------------------------------------------------------------------------------


def read_checkpoint(path) -> PublishedCheckpoint:
    """A released checkpoint (or a bare state dict), read without unpickling code; RunError when it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    content = _torch_load(path)
    if not isinstance(content, dict):
        raise RunError(f"{path}: holds a {type(content).__name__}, not a checkpoint dict or a state dict")
    if "model_state" in content:
        state, where = content["model_state"], f"{path}: 'model_state'"
    else:
        state, where = content, f"{path} (no 'model_state', so read as a bare state dict)"
    if not isinstance(state, dict):
        raise RunError(f"{where} is of type {type(state).__name__}, not a state dict")
    return PublishedCheckpoint(_strip_prefix(state, where), _count(content.get("iters")), _count(content.get("epoch")))


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only reader met something it does not read
        blocked = _unsafe_globals(path) or re.findall(r"(?i)unsupported (?:global: )?GLOBAL (\S+)", str(exc))
        if blocked:
            raise RunError(
                f"{path}: refused: loading it would need unpickling code (it refers to {_some(blocked)}), and fm4npp "
                "reads checkpoints with torch.load(weights_only=True) only (tensors, numbers, strings and "
                "containers). If you trust the file, save its model_state alone with torch.save and import that"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", str(exc), re.DOTALL)
        reason = detail.group(1).strip() if detail else str(exc).splitlines()[0]
        raise RunError(f"{path}: not a PyTorch checkpoint that can be read without unpickling code ({reason})") from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds (zip, EOF, key, runtime) for a bad file
        raise RunError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def _unsafe_globals(path: Path) -> list[str]:
    """The globals (functions, classes) a checkpoint's pickle refers to that torch.load(weights_only=True) refuses,
    read off the pickle's opcodes without running them. The error's text changes between torch versions (a blocked
    module such as os is reported in other words than an unknown class), so it is not parsed."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (the legacy format), or unreadable: no names to give
        return []


def _strip_prefix(state: dict, where) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise RunError(f"{where}: {key!r} is of type {type(value).__name__}, not a tensor")
        name = key.removeprefix("module.") if isinstance(key, str) else key
        if name in stripped:
            raise RunError(f"{where}: {name!r} is there twice, with and without the 'module.' prefix")
        stripped[name] = value
    return stripped


def _count(value) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- the sizes and the keys ---------------------------------------------------------------------------------------


def infer_config(state: dict[str, torch.Tensor], where="checkpoint") -> BackboneConfig:
    """The BackboneConfig of a published state dict (no prefix), after checking every key and shape against it."""
    n_layers = _layer_count(state, where)
    _check_keys(state, n_layers, where)
    sizes = _read_sizes(state, n_layers, where)
    _check_shapes(state, sizes, where)
    return BackboneConfig(
        d_model=sizes.d_model,
        n_layers=n_layers,
        d_state=sizes.d_state,
        headdim=sizes.d_inner // sizes.nheads,
        expand=sizes.d_inner // sizes.d_model,
        d_conv=sizes.d_conv,
        ngroups=1,
        chunk_size=CHUNK_SIZE,
        k=sizes.outputs // 3,
        dropout=0.0,
    )


def _layer_count(state, where) -> int:
    indices = {int(m.group(1)) for key in state if isinstance(key, str) and (m := _LAYER.match(key))}
    if not indices:
        raise RunError(f"{where}: no mamba_layers.* keys: not a published FM4NPP backbone (keys: {_some(list(state))})")
    return max(indices) + 1  # a gap shows as the missing keys of the layers in it


def published_keys(n_layers: int) -> list[str]:
    """Every key of a published backbone of `n_layers` layers, in registration order."""
    layers = [f"mamba_layers.{i}.{key}" for i in range(n_layers) for key in LAYER_KEYS]
    return [*OTHER_KEYS[:2], *layers, *OTHER_KEYS[2:]]


def _check_keys(state, n_layers, where) -> None:
    expected = published_keys(n_layers)
    missing = [key for key in expected if key not in state]
    unknown = sorted(set(map(str, state)) - set(expected))
    problems = ([f"missing {_some(missing)}"] if missing else []) + ([f"unknown {_some(unknown)}"] if unknown else [])
    if problems:
        raise RunError(
            f"{where}: not the key layout of a published FM4NPP backbone ({n_layers} layers): " + "; ".join(problems)
        )


def _read_sizes(state, n_layers, where) -> Sizes:
    def dim(key, axis):
        shape = tuple(state[key].shape)
        if len(shape) <= axis:
            raise RunError(f"{where}: {key} has shape {shape}; a published backbone's has at least {axis + 1} axes")
        return shape[axis]

    layer = "mamba_layers.0.1."
    sizes = Sizes(
        d_model=dim("embedder.proj", 1),
        n_layers=n_layers,
        d_inner=dim(layer + "out_proj.weight", 1),
        nheads=dim(layer + "dt_bias", 0),
        d_state=dim(layer + "lin_B.weight", 0),
        d_conv=dim(layer + "conv1d.weight", 2),
        outputs=dim("output_layer.weight", 0),
    )
    checks = [
        (sizes.d_inner % sizes.d_model == 0, f"{layer}out_proj.weight: d_inner must be a multiple of D"),
        (sizes.nheads > 0 and sizes.d_inner % sizes.nheads == 0, f"{layer}dt_bias: H must divide d_inner"),
        (sizes.outputs % 3 == 0, "output_layer.weight: 3k must be a multiple of 3 ([eta', phi', r'] per neighbour)"),
    ]
    for ok, message in checks:
        if not ok:
            raise RunError(f"{where}: {message} ({sizes.describe()})")
    return sizes


def published_shapes(sizes: Sizes) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (its shape, the shape's formula) for the published backbone of these sizes."""
    D, E, H, N, K, k3 = sizes.d_model, sizes.d_inner, sizes.nheads, sizes.d_state, sizes.d_conv, sizes.outputs
    layer = {
        "0.weight": ((D,), "(D,)"),
        "1.dt_bias": ((H,), "(H,)"),
        "1.A_log": ((H,), "(H,)"),
        "1.D": ((H,), "(H,)"),
        "1.in_proj.weight": ((2 * E + H, D), "(2 d_inner + H, D)"),
        "1.lin_B.weight": ((N, D), "(N, D)"),
        "1.lin_C.weight": ((N, D), "(N, D)"),
        "1.conv1d.weight": ((E + 2 * N, 1, K), "(d_inner + 2N, 1, K)"),
        "1.conv1d.bias": ((E + 2 * N,), "(d_inner + 2N,)"),
        "1.norm.weight": ((E,), "(d_inner,)"),
        "1.out_proj.weight": ((D, E), "(D, d_inner)"),
    }
    shapes = {"embedder.proj": ((1, D), "(1, D)"), "embedder.embed.projection": ((N_POSITION, D), "(63, D)")}
    for i in range(sizes.n_layers):
        shapes.update({f"mamba_layers.{i}.{key}": value for key, value in layer.items()})
    shapes.update(
        {
            "output_layer.weight": ((k3, D), "(3k, D)"),
            "output_layer.bias": ((k3,), "(3k,)"),
            "norm.weight": ((D,), "(D,)"),
        }
    )
    return shapes


def _check_shapes(state, sizes: Sizes, where) -> None:
    expected = published_shapes(sizes)
    wrong = [
        f"{key} {tuple(state[key].shape)}, expected {shape} = {formula}"
        for key, (shape, formula) in expected.items()
        if tuple(state[key].shape) != shape
    ]
    if wrong:
        raise RunError(
            f"{where}: shapes that do not fit the sizes read off embedder.proj, layer 0 and output_layer "
            f"({sizes.describe()}): {_some(wrong)}"
        )


# --- the mapping ---------------------------------------------------------------------------------------------------


def to_backbone_state(state: dict[str, torch.Tensor], config: BackboneConfig) -> dict[str, torch.Tensor]:
    """A published state dict (checked by infer_config) as the state dict of our Backbone."""
    ours = {new: state[old] for old, new in RENAMED.items()}
    d_inner = config.expand * config.d_model
    for i in range(config.n_layers):
        old, new = f"mamba_layers.{i}.", f"blocks.{i}."
        ours.update({new + name: state[old + key] for key, name in RENAMED_IN_LAYER.items()})
        in_proj = state[old + "1.in_proj.weight"]  # rows [z, x, dt] -> [z, x, B, C, dt]
        B, C = state[old + "1.lin_B.weight"], state[old + "1.lin_C.weight"]
        ours[new + "mixer.in_proj.weight"] = torch.cat([in_proj[: 2 * d_inner], B, C, in_proj[2 * d_inner :]])
    return ours


def published_weights(state: dict[str, torch.Tensor], where="checkpoint") -> tuple[BackboneConfig, dict]:
    """The BackboneConfig of a published state dict (no prefix) and its weights in our Backbone's layout, every key
    and shape checked (RunError naming them); `Backbone.from_published` builds the model from them."""
    config = infer_config(state, where)
    return config, to_backbone_state(state, config)


def paper_size(config: BackboneConfig) -> str | None:
    """The paper's name (m1 .. m6) of the size of `config` (its width, layers, d_state and mixer shape), or None.

    k, dropout and the chunk size are not part of the size: the released k = 30 (and k = 5) models are the paper's.
    """
    for name, size in SIZES.items():
        if name.startswith("m") and _architecture(size) == _architecture(config):
            return name
    return None


def _architecture(config: BackboneConfig) -> tuple:
    return (config.d_model, config.n_layers, config.state, config.headdim, config.expand, config.d_conv, config.ngroups)
