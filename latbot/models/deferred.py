"""Deferred weights: a model built without reading its big checkpoint files, and each rank's shards read
straight from those files (`dist.meta_init`, docs/real-size.md).

Under `deferring()` (process 0's build, when `dist.meta_init` is on), a loader that supports it does not
read its checkpoint: it builds its module with the parameters on the meta device (`parameters_on_meta`:
buffers stay real, so non-persistent buffers such as rotary frequencies are computed as usual) and
`record`s where each parameter lives — a `Located(file, key)` in a safetensors file. The loaders that do:
transformers models (`latbot.models.loading.load_pretrained`, the InternVL and PaliGemma encoders and
students), diffusers' SANA transformer and VAE, and pi0.5 checkpoints. After the build, `locations(model)`
turns the records into {full parameter name: Located}; every rank then reads only its own rows of each
tensor with `safe_open(...).get_slice` (`read_rows`), so no process holds a full copy of those weights.
Anything not recorded (LatBot's own, randomly initialised parameters, a parent run's weights) still comes
from process 0's build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_RECORDS: ContextVar[list[tuple[nn.Module, dict[str, Located]]] | None] = ContextVar("latbot_deferred", default=None)


@dataclass(frozen=True)
class Located:
    """One tensor in a safetensors file."""

    file: str
    key: str


@contextlib.contextmanager
def deferring() -> Iterator[list[tuple[nn.Module, dict[str, Located]]]]:
    """Loaders inside this block record their checkpoints' tensors instead of reading them; yields the
    records, [(module, {name within the module: Located})]."""
    records: list[tuple[nn.Module, dict[str, Located]]] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def active() -> bool:
    """Whether the current build defers its checkpoint reads (loaders ask before reading)."""
    return _RECORDS.get() is not None


def record(module: nn.Module, located: dict[str, Located]) -> None:
    """`module`'s parameters (and persistent buffers) named in `located` are to be read from those files."""
    records = _RECORDS.get()
    if records is None:
        raise RuntimeError("latbot.models.deferred.record is only called inside deferring()")
    records.append((module, dict(located)))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with every parameter on the meta device and every buffer where it would be: the
    constructor's own random initialisation of the parameters costs nothing and draws no random number."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None and param.device.type != "meta":
            kind = type(param)
            self._parameters[name] = kind(param.to("meta"), requires_grad=param.requires_grad)

    rng = torch.get_rng_state()  # a module that draws before registering (torch.randn(...) → Parameter)
    nn.Module.register_parameter = on_meta
    try:
        with torch.device("cpu"):  # buffers on CPU even inside an outer torch.device("meta") block
            yield
    finally:
        nn.Module.register_parameter = register
        torch.set_rng_state(rng)  # draws nothing, as `from_pretrained` (which builds on meta) draws nothing


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory (one file or an index's shards), sorted."""
    return sorted(p for p in Path(directory).glob("*.safetensors") if p.is_file())


def header_keys(files: list[Path]) -> dict[str, Located]:
    """{key: Located} over the files' headers (no tensor is read)."""
    from safetensors import safe_open

    out: dict[str, Located] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                out[key] = Located(str(f), key)
    return out


def shapes(located: dict[str, Located]) -> dict[str, tuple[int, ...]]:
    """{name: the stored tensor's shape} from the files' headers."""
    from safetensors import safe_open

    out: dict[str, tuple[int, ...]] = {}
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, loc in located.items():
        by_file.setdefault(loc.file, []).append((name, loc.key))
    for file, pairs in by_file.items():
        with safe_open(file, framework="pt") as st:
            for name, key in pairs:
                out[name] = tuple(st.get_slice(key).get_shape())
    return out


def owned_modules(model: nn.Module, records) -> dict[str, Located]:
    """{full name in `model`: Located} for every recorded tensor; tied parameters under every name."""
    prefixes: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        prefixes.setdefault(id(module), []).append(name)
    out: dict[str, Located] = {}
    for module, located in records:
        for prefix in prefixes.get(id(module), []):
            for name, loc in located.items():
                out[f"{prefix}.{name}" if prefix else name] = loc
    return out


def read_rows(loc: Located, shape: tuple[int, ...], offset: tuple[int, ...]) -> torch.Tensor:
    """The block of `loc`'s tensor starting at `offset` with `shape` (a rank's shard), reading only it."""
    from safetensors import safe_open

    with safe_open(loc.file, framework="pt") as st:
        view = st.get_slice(loc.key)
        if len(shape) == 0:
            return view[...] if hasattr(view, "__getitem__") else st.get_tensor(loc.key)
        return view[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]


def build_recorded(build, directory: Path, where: str, error: type[Exception] = ValueError) -> nn.Module | None:
    """`build()` with its parameters on the meta device, each recorded at the tensor of the same name in
    `directory`'s safetensors files (diffusers' layout: keys are parameter names). None when the files
    leave a parameter out (the caller then loads the ordinary way); a shape that differs is an `error` naming
    `where` (the recipe field)."""
    files = safetensors_files(directory)
    if not files:
        return None
    with parameters_on_meta():
        module = build()
    stored = header_keys(files)
    own = module.state_dict()
    located: dict[str, Located] = {}
    for name in own:
        if name in stored:
            located[name] = stored[name]
    for name, _ in module.named_parameters(remove_duplicate=False):
        if name not in located:
            return None
    for name, shape in shapes(located).items():
        if shape != tuple(own[name].shape):
            raise error(
                f"{where}: '{directory}' stores {name} as {list(shape)}, the model built from its config has "
                f"{list(own[name].shape)}; the checkpoint is damaged or was saved by another architecture"
            )
    record(module, located)
    return module.eval()
