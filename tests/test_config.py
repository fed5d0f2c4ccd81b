import re

import pytest

from nolabel.config import ConfigError, apply_overrides, config_from_dict, diff, load_yaml, new_config, save_yaml


def test_defaults_and_round_trip(tmp_path):
    cfg = new_config("dino")
    apply_overrides(cfg, ["--data.train=demo", "--run.epochs=3", "--dino.out_dim=512", "--optim.lr=0.001",
                          "--model.small_stem=true", "--data.image_size=null"])
    assert cfg.run.epochs == 3 and cfg.method_config.out_dim == 512 and cfg.optim.lr == 0.001
    assert cfg.model.small_stem is True and cfg.data.image_size is None
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_yaml(tmp_path / "c.yaml")
    assert diff(cfg, again) == []
    assert again.to_dict() == cfg.to_dict()


def test_int_accepted_for_float_but_not_the_reverse():
    cfg = new_config()
    apply_overrides(cfg, ["--optim.lr=1"])
    assert isinstance(cfg.optim.lr, float)
    apply_overrides(cfg, ["--optim.lr=1e-3"])          # YAML 1.1 would read a string
    assert cfg.optim.lr == 0.001
    with pytest.raises(ConfigError, match="run.epochs"):
        apply_overrides(cfg, ["--run.epochs=2.5"])


@pytest.mark.parametrize("override,message", [
    ("--nosuch.key=1", "unknown section 'nosuch'"),
    ("--run.nosuch=1", "valid keys of 'run'"),
    ("--run.epochs=ten", "run.epochs expects a whole number or null, got 'ten'"),
    ("--optim.lr=abc", "optim.lr expects a number or null, got 'abc'"),
    ("--run.seed=1.5", "run.seed expects a whole number, got 1.5"),
    ("--run.progress=maybe", "run.progress expects true or false, got 'maybe'"),
    ("--run.threads=[1]", "run.threads expects a whole number or text, got [1]"),
    ("--run.epochs", "section.key=value"),
])
def test_bad_overrides_name_the_option(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(new_config(), [override])


def test_unknown_method_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="valid methods"):
        new_config("nosuch")
    (tmp_path / "bad.yaml").write_text("run: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_dict({"method": "dino", "bogus": {}})


def test_diff_lists_changed_keys():
    a, b = new_config(), new_config()
    b.run.epochs = 7
    b.method_config.teacher_temp = 0.05
    assert diff(a, b) == ["dino.teacher_temp", "run.epochs"]


def test_demo_preset_sets_cpu_values_and_user_options_win():
    from nolabel.presets import DEMO_METHOD, DEMO_PRESET, apply_demo_preset, is_demo
    cfg = apply_demo_preset(new_config())
    assert cfg.model.backbone == DEMO_PRESET["model.backbone"] and cfg.method_config.out_dim == 1024
    assert cfg.optim.lr is None                      # SimCLR's optimiser values stay off DINO's demo
    apply_overrides(cfg, ["--run.epochs=3"])
    assert cfg.run.epochs == 3
    simclr = apply_demo_preset(new_config(DEMO_METHOD))
    assert DEMO_METHOD == "simclr" and simclr.method_config.temperature == 0.2 and simclr.method_config.hue == 0.5
    assert simclr.optim.lr == 4e-3 and simclr.model.small_stem is True and simclr.run.batch_size == 128
    assert is_demo("demo") and is_demo("demo:test?n=5") and not is_demo("/data/demo")


def test_demo_preset_gives_way_to_another_backbone():
    from nolabel.presets import apply_demo_preset
    cfg = apply_overrides(new_config("dino"), ["--model.backbone=vit_tiny", "--model.patch_size=4",
                                               "--run.epochs=3"])
    apply_demo_preset(cfg)                                # after the options: it fills only what is unset
    assert cfg.model.width is None and cfg.model.small_stem is None and cfg.model.patch_size == 4
    assert cfg.model.backbone == "vit_tiny" and cfg.run.epochs == 3 and cfg.run.batch_size == 128
    kept = apply_demo_preset(new_config("dino"))           # the preset's own backbone keeps its options
    assert kept.model.width == 0.25 and kept.model.small_stem is True


def test_the_demo_of_a_masking_method_takes_the_vit_default():
    """``nolabel train --method mae --data demo``: the preset's ResNet would be refused
    (``Method.requires_vit``), so MAE and iBOT keep the ViT default and the rest of the preset."""
    from nolabel.presets import apply_demo_preset, resolve
    for name in ("mae", "ibot"):
        cfg = apply_demo_preset(apply_overrides(new_config(name), ["--data.train=demo"]))
        assert cfg.model.backbone is None and cfg.model.width is None and cfg.run.epochs == 25
        resolve(cfg, 32, 1000)
        assert cfg.model.backbone == "vit_tiny" and cfg.model.patch_size == 4
    assert apply_demo_preset(new_config("dino")).model.backbone == "resnet18"


def test_resolution_completes_the_config_once(tmp_path):
    """presets.resolve: the recipe, the backbone's own choices and the method's
    data-dependent values, all written before anything is built (after the demo preset)."""
    from nolabel.presets import apply_demo_preset, resolve
    cfg = apply_overrides(new_config("dino"), ["--data.train=demo", "--model.backbone=vit_tiny"])
    resolve(apply_demo_preset(cfg), 32, 1000)
    assert cfg.model.patch_size == 4 and cfg.model.depth == 12 and cfg.model.embed_dim == 192
    assert cfg.model.width is None                         # not an option of a ViT
    assert cfg.method_config.out_dim == 1024               # the demo preset's, not the recipe's 2048
    assert cfg.method_config.warmup_teacher_temp_epochs == 2.5   # 10% of the demo's 25 epochs
    assert cfg.run.recipe == "small" and cfg.run.batch_size == 128
    resnet = resolve(apply_overrides(new_config("swav"), ["--model.backbone=resnet18"]), 32, 1000)
    assert resnet.model.small_stem is True and resnet.model.width == 1.0 and resnet.model.patch_size is None
    assert resnet.method_config.n_prototypes == 512 and resnet.method_config.queue_start_epoch == 8
