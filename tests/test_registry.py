"""The plugin registry: entry-point discovery, lazy import, and every error a plugin user can hit."""

from __future__ import annotations

import sys

import pytest

from latbot.errors import PluginConflictError, PluginLoadError, UnknownKindError, UnknownPluginError
from tests.conftest import PLUGIN_SOURCE


def test_example_plugin_is_discovered_through_its_entry_points(fresh_registry):
    (claim,) = [c for c in fresh_registry.entries("encoders") if c[0].name == "tiny_conv"]
    assert claim[0].distribution == "latbot-example-plugin"
    assert claim[0].target == "latbot_example_plugin.tiny_conv:TinyConvEncoder"
    assert not claim[0].is_builtin
    assert "tiny_mlp" in fresh_registry.names("decoders")


def test_example_plugins_build_and_follow_the_encoder_decoder_contract(fresh_registry):
    import torch

    enc_cls = fresh_registry.get("encoders", "tiny_conv")
    encoder = fresh_registry.build("encoders", enc_cls.Config(width=32, num_scene_tokens=4, num_motion_tokens=6))
    decoder = fresh_registry.build(
        "decoders", fresh_registry.get("decoders", "tiny_mlp").Config(horizon=3), latent_width=encoder.width
    )
    frames = torch.rand(2, 4, 3, 32, 32)  # (B, T, 3, H, W)
    z_sce, z_mot = encoder(frames, ["pick up the red block", "open the drawer"])
    assert z_sce.shape == (2, 4, 32) and z_mot.shape == (2, 6, 32)
    mask = torch.zeros(2, 44)
    mask[:, 7:14] = 1
    losses = decoder(z_sce, z_mot, frames[:, 0], frames[:, -1], torch.randn(2, 3, 44), mask)
    (losses["image"] + losses["action"]).backward()
    assert encoder.queries.grad is not None and encoder.queries.grad.abs().sum() > 0


def test_discovery_does_not_import_plugin_modules(install):
    install(
        "fake-lazy",
        {"latbot.students": {"lazy_one": "fakeplug_lazy.mod:Lazy"}},
        {"fakeplug_lazy.mod": PLUGIN_SOURCE.format(cls="Lazy", name="lazy_one")},
    )
    from latbot import registry

    assert "lazy_one" in registry.names("students")
    assert "fakeplug_lazy.mod" not in sys.modules
    cls = registry.get("students", "lazy_one")
    assert "fakeplug_lazy.mod" in sys.modules and cls.__name__ == "Lazy"
    assert registry.build("students", cls.Config(size=5)).config.size == 5


def test_unknown_name_suggests_the_closest_and_lists_all(fresh_registry):
    with pytest.raises(UnknownPluginError) as e:
        fresh_registry.get("encoders", "tiny_cnv")
    msg = str(e.value)
    assert "did you mean 'tiny_conv'?" in msg and "available encoders: " in msg and "tiny_conv)" in msg


def test_unknown_kind_lists_the_kinds(fresh_registry):
    with pytest.raises(UnknownKindError, match=r"did you mean 'encoders'.*available kinds: encoders, decoders"):
        fresh_registry.names("encoder")


def test_broken_plugin_names_plugin_distribution_and_cause(install):
    install(
        "fake-broken",
        {"latbot.decoders": {"broken": "fakeplug_broken.mod:Broken"}},
        {"fakeplug_broken.mod": "import a_module_that_does_not_exist\n"},
    )
    from latbot import registry

    with pytest.raises(PluginLoadError) as e:
        registry.get("decoders", "broken")
    msg = str(e.value)
    assert "decoders plugin 'broken'" in msg and "'fake-broken'" in msg
    assert "ModuleNotFoundError" in msg and "a_module_that_does_not_exist" in msg


def test_missing_class_and_contract_violations_are_errors(install):
    install(
        "fake-contract",
        {
            "latbot.datasets": {
                "noattr": "fakeplug_contract.mod:Missing",
                "noconfig": "fakeplug_contract.mod:NoConfig",
                "misnamed": "fakeplug_contract.mod:Misnamed",
            }
        },
        {"fakeplug_contract.mod": PLUGIN_SOURCE.format(cls="Misnamed", name="other_name") + "\nclass NoConfig: pass\n"},
    )
    from latbot import registry

    with pytest.raises(PluginLoadError, match="has no attribute 'Missing'"):
        registry.get("datasets", "noattr")
    with pytest.raises(PluginLoadError, match="nested `Config"):
        registry.get("datasets", "noconfig")
    with pytest.raises(PluginLoadError, match=r'type: Literal\["misnamed"\]'):
        registry.get("datasets", "misnamed")


def test_two_distributions_claiming_one_name_is_an_error_naming_both(install):
    src = {"fakeplug_a.mod": PLUGIN_SOURCE.format(cls="A", name="same")}
    install("fake-a", {"latbot.simulators": {"same": "fakeplug_a.mod:A"}}, src)
    install(
        "fake-b",
        {"latbot.simulators": {"same": "fakeplug_b.mod:B"}},
        {"fakeplug_b.mod": PLUGIN_SOURCE.format(cls="B", name="same")},
    )
    from latbot import registry

    with pytest.raises(PluginConflictError) as e:
        registry.get("simulators", "same")
    assert "'fake-a'" in str(e.value) and "'fake-b'" in str(e.value)


def test_one_distribution_seen_twice_is_not_a_conflict(install):
    for _ in range(2):
        install(
            "fake-twice",
            {"latbot.simulators": {"twice": "fakeplug_twice.mod:T"}},
            {"fakeplug_twice.mod": PLUGIN_SOURCE.format(cls="T", name="twice")},
        )
    from latbot import registry

    assert registry.get("simulators", "twice").__name__ == "T"


def test_environment_variable_turns_third_party_autoload_off(fresh_registry, monkeypatch):
    assert "tiny_conv" in fresh_registry.names("encoders")
    monkeypatch.setenv("LATBOT_DISABLE_PLUGIN_AUTOLOAD", "1")
    fresh_registry.refresh()
    assert "tiny_conv" not in fresh_registry.names("encoders")
    with pytest.raises(UnknownPluginError):
        fresh_registry.get("encoders", "tiny_conv")


def test_runtime_registration_and_its_conflict_with_an_installed_plugin(fresh_registry):
    from latbot.config import PluginConfig

    class Local:
        class Config(PluginConfig):
            type: str = "local_enc"

    with pytest.raises(PluginLoadError, match="Literal"):
        fresh_registry.register("encoders", "local_enc", Local)
        fresh_registry.get("encoders", "local_enc")
    fresh_registry.unregister("encoders", "local_enc")
    with pytest.raises(PluginConflictError, match="latbot-example-plugin"):
        fresh_registry.register("encoders", "tiny_conv", Local)
    with pytest.raises(PluginLoadError, match="snake_case"):
        fresh_registry.register("encoders", "Bad-Name", Local)
