"""Deferred pretrained weights (`latbot.models.deferred`, used by `dist.meta_init`): for every registered plugin
with a `pretrained` field, a build inside `deferring()` reads no tensor of its checkpoint, leaves exactly
the checkpoint's parameters on the meta device, and records for each the file and key whose values the
ordinary load (`from_pretrained`, diffusers, `checkpoint.apply`) puts there — read back whole and as a
rank's block of rows. The multi-process path (each rank reading only its rows, the two ranks together
every stored byte once) is tests/test_meta_init.py::test_two_processes_start_from_process_0s_ordinary_build.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latbot.models import deferred
from tests.test_fsdp_bf16_checkpoints import Loaded, applicable, layout, save_published

PLUGINS = sorted(f"{k}/{n}" for k, n in applicable()[0])


def test_every_plugin_with_a_pretrained_field_is_covered():
    assert set(PLUGINS) >= {
        "encoders/internvl", "encoders/paligemma", "decoders/sana", "students/internvl", "students/paligemma",
        "students/pi05", "action_experts/pi05",
    }  # fmt: skip


def pretrained_part(module) -> dict[str, torch.Tensor]:
    """The tensors the plugin's checkpoint provides, by name within the plugin (its published layout)."""
    how = layout(module)
    if how == "transformers":
        return {f"vlm.{n}": t for n, t in module.vlm.state_dict().items()}
    if how == "diffusers":
        parts = ("transformer", "vae")
        return {f"{part}.{n}": t for part in parts for n, t in getattr(module, part).state_dict().items()}
    from latbot.models.pi05 import keys

    component = "expert" if "Expert" in type(module).__name__ else "student"
    return {n: t for n, t in module.state_dict().items() if not keys.latbot_only(component, n)}


@pytest.mark.parametrize("key", PLUGINS)
def test_a_deferred_build_records_where_every_pretrained_tensor_is(key, tmp_path: Path):
    kind, name = key.split("/")
    path = save_published(kind, name, tmp_path / "published")
    torch.manual_seed(3)
    ordinary = Loaded(kind, name, path).m
    want = pretrained_part(ordinary)

    torch.manual_seed(3)
    with deferred.deferring() as records:
        lazy = Loaded(kind, name, path).m
    located = deferred.owned_modules(lazy, records)
    on_meta = {n for n, t in lazy.state_dict(keep_vars=True).items() if t.is_meta}
    assert on_meta == set(want), sorted(on_meta ^ set(want))[:5]  # the checkpoint's tensors, none read
    assert set(want) <= set(located), sorted(set(want) - set(located))[:5]  # every checkpoint tensor located
    for n, t in lazy.state_dict().items():  # and everything else (LatBot's own) built as usual
        if n not in located:
            assert not t.is_meta and torch.equal(t, ordinary.state_dict()[n]), n
    for n, loc in located.items():
        full = deferred.read_rows(loc, tuple(want[n].shape), (0,) * want[n].dim())
        assert torch.equal(full.to(want[n].dtype), want[n]), n  # (diffusers here loads bf16 files in fp32)
    big = max(located, key=lambda n: want[n].shape[0] if want[n].dim() else 0)
    t, half = want[big], want[big].shape[0] // 2
    rows = deferred.read_rows(located[big], (t.shape[0] - half, *t.shape[1:]), (half, *(0,) * (t.dim() - 1)))
    assert torch.equal(rows.to(t.dtype), t[half:])  # what rank 1 of 2 reads: its rows, and only they


def test_a_checkpoint_that_does_not_fit_is_a_one_line_error(tmp_path: Path):
    from safetensors.torch import load_file, save_file

    from latbot.models.loading import ModelBuildError

    path = Path(save_published("encoders", "internvl", tmp_path / "published"))
    f = next(path.glob("*.safetensors"))
    tensors = load_file(str(f))
    k = next(k for k in tensors if k.endswith("embed_tokens.weight"))
    tensors[k] = tensors[k][:-1].clone()  # one row short
    save_file(tensors, str(f), metadata={"format": "pt"})
    with deferred.deferring(), pytest.raises(ModelBuildError, match=r"stores .*embed_tokens\.weight as \[") as e:
        Loaded("encoders", "internvl", str(path))
    assert "\n" not in str(e.value)


def test_parameters_on_meta_keeps_buffers_real():
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.register_buffer("freq", torch.arange(3.0), persistent=False)

    with deferred.parameters_on_meta():
        m = M()
    assert m.lin.weight.is_meta and m.lin.bias.is_meta and isinstance(m.lin.weight, nn.Parameter)
    assert not m.freq.is_meta and torch.equal(m.freq, torch.arange(3.0))
    assert not nn.Linear(2, 2).weight.is_meta  # the patch is gone afterwards
