"""Recipes (issue 12, part 3): ``run.recipe`` picks which values fill the fields nobody
set; an option, a config file or the demo preset always wins; config.yaml names the recipe."""
import pytest

from nolabel.config import ConfigError, apply_overrides, load_yaml, new_config
from nolabel.methods import get_method, method_names
from nolabel.presets import RECIPES, apply_demo_preset, apply_recipe, pick_recipe, resolve


def test_auto_is_small_below_96_px_and_thesis_from_96():
    assert pick_recipe("auto", 32) == "small"
    assert pick_recipe("auto", 95) == "small"
    assert pick_recipe("auto", 96) == "thesis"
    assert pick_recipe("auto", 224) == "thesis"
    assert pick_recipe("thesis", 32) == "thesis"
    assert pick_recipe("small", 224) == "small"


def test_unknown_recipe_names_the_option_and_the_choices():
    with pytest.raises(ConfigError, match=r"run\.recipe='fast'.*auto, small, thesis"):
        pick_recipe("fast", 32)


def test_every_recipe_is_a_valid_config_of_its_method():
    """Every key exists with a value of the right type (set_value checks both), and no
    recipe hides under a name run.recipe cannot take."""
    for name in method_names():
        method = get_method(name)
        for recipe, values in method.recipes.items():
            assert recipe in RECIPES and recipe != "auto", (name, recipe)
            cfg = apply_overrides(new_config(name), [f"--run.recipe={recipe}"])
            apply_recipe(cfg, method.recipes, 32)
            for key, value in values.items():
                section, field = key.split(".")
                assert section in ("optim", "model", "run", "data", "eval", name), (name, key)
                got = getattr(cfg.sections()[section], field)
                assert got == value, (name, key, got, value)


def test_small_recipe_fills_unset_fields_and_options_win():
    method = get_method("simclr")
    cfg = apply_overrides(new_config("simclr"), ["--optim.lr=1e-3"])
    resolve(cfg, 32, 1000)
    assert cfg.run.recipe == "small"
    assert cfg.optim.lr == 1e-3                                   # the user's
    assert cfg.optim.weight_decay == method.recipes["small"]["optim.weight_decay"]
    assert cfg.method_config.temperature == method.recipes["small"]["simclr.temperature"]


def test_thesis_recipe_keeps_the_papers_values():
    method = get_method("simclr")
    cfg = apply_overrides(new_config("simclr"), ["--run.recipe=thesis"])
    resolve(cfg, 32, 1000)
    assert cfg.run.recipe == "thesis"
    assert cfg.optim.lr == method.default_optim["lr"]
    assert cfg.optim.weight_decay == method.default_optim["weight_decay"]
    assert cfg.method_config.temperature == 0.5                   # the method's rule below 96 px


def test_large_images_get_the_thesis_values_under_auto():
    method = get_method("simclr")
    cfg = new_config("simclr")
    resolve(cfg, 224, 1000)
    assert cfg.run.recipe == "thesis" and cfg.optim.lr == method.default_optim["lr"]


def expander(name, size, *options):
    cfg = apply_overrides(new_config(name), ["--model.backbone=resnet18", *options])
    return resolve(cfg, size, 1000).method_config.proj_dim


def test_vicreg_expander_follows_the_backbone_below_96_px():
    """4 x the backbone's features below 96 px, at most 2048 (512 on ResNet-18 x0.25's 128);
    the paper's 8192 from 96 px up; an option wins. Barlow Twins follows the same rule, its
    redundancy weight matched to the width below 2048 (BENCHMARKS.md, "CPU speed")."""
    assert expander("vicreg", 32, "--model.width=0.25") == 512
    assert expander("vicreg", 32, "--model.width=0.125") == 256
    assert expander("vicreg", 32, "--model.width=1.0") == 2048
    assert expander("vicreg", 32, "--model.backbone=vit_tiny") == 768              # 4 x 192
    assert expander("vicreg", 96, "--model.width=0.25") == 8192
    assert expander("vicreg", 32, "--model.width=0.25", "--vicreg.proj_dim=2048") == 2048
    assert expander("barlowtwins", 32, "--model.width=0.25") == 512
    assert expander("barlowtwins", 32, "--model.width=1.0") == 2048
    assert expander("barlowtwins", 96, "--model.width=0.25") == 8192


def lambd(size, *options):
    cfg = apply_overrides(new_config("barlowtwins"), ["--model.backbone=resnet18", *options])
    return resolve(cfg, size, 1000).method_config.lambd


def test_barlow_twins_redundancy_weight_follows_the_width_below_2048():
    assert lambd(96, "--model.width=0.25") == 5e-3                    # the paper's, at 8192
    assert lambd(32, "--model.width=1.0") == 5e-3                     # 2048: solo-learn's and lightly's CIFAR value
    assert lambd(32, "--model.width=0.25") == 0.02                    # 512: lambda x d as at 2048
    assert lambd(32, "--model.width=0.25", "--barlowtwins.proj_dim=1024") == 0.01
    assert lambd(32, "--model.width=0.25", "--barlowtwins.lambd=0.005") == 0.005   # an option wins


def test_demo_preset_beats_the_recipe():
    method = get_method("simclr")
    cfg = apply_demo_preset(new_config("simclr"))
    demo_lr = cfg.optim.lr
    resolve(cfg, 32, 1000)
    assert cfg.optim.lr == demo_lr != method.recipes["small"]["optim.lr"]


def test_config_file_values_are_explicit(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: simclr\nsimclr:\n  temperature: 0.7\n")
    cfg = load_yaml(path)
    resolve(cfg, 32, 1000)
    assert cfg.method_config.temperature == 0.7 and cfg.run.recipe == "small"


RESNET = ["--model.backbone=resnet18", "--model.width=0.125"]
VIT = ["--model.backbone=vit_tiny", "--model.depth=1", "--model.embed_dim=32", "--model.num_heads=2"]


@pytest.mark.parametrize("name", sorted(n for n in method_names() if get_method(n).recipes))
def test_every_small_recipe_trains(tmp_path, name):
    """A few steps of each method under its small recipe: finite losses, config.yaml states it."""
    import math

    from nolabel.runlog import MetricsLog
    from nolabel.train import train

    cfg = apply_overrides(new_config(name), [
        "--data.train=demo?n=32", "--run.epochs=1", "--run.batch_size=16", "--run.progress=false",
        "--run.log_every=1", "--run.precision=fp32", "--run.threads=1", "--eval.every=0",
        *(VIT if get_method(name).requires_vit else RESNET), f"--run.out={tmp_path / name}"])
    run = train(cfg)
    saved = load_yaml(run / "config.yaml")
    assert saved.run.recipe == "small"
    for key, value in get_method(name).recipes["small"].items():
        section, field = key.split(".")
        assert getattr(saved.sections()[section], field) == value, key
    losses = [r["loss"] for r in MetricsLog(run).read() if r["type"] == "step"]
    assert losses and all(math.isfinite(v) for v in losses)


def test_the_run_records_its_recipe(tmp_path):
    """Through the real loop: config.yaml names the recipe and holds its values; a bad
    name fails before any image is decoded."""
    from nolabel.train import train

    base = ["--data.train=demo?n=32", "--run.epochs=1", "--run.batch_size=16", "--run.progress=false",
            "--run.precision=fp32", "--run.threads=1", "--eval.every=0", "--model.backbone=resnet18",
            "--model.width=0.125", "--simclr.hidden_dim=32", "--simclr.out_dim=16"]
    run = train(apply_overrides(new_config("simclr"), [*base, f"--run.out={tmp_path / 'a'}"]))
    saved = load_yaml(run / "config.yaml")
    assert saved.run.recipe == "small" and saved.method_config.temperature == 0.2
    run = train(apply_overrides(new_config("simclr"), [*base, "--run.recipe=thesis",
                                                       f"--run.out={tmp_path / 'b'}"]))
    saved = load_yaml(run / "config.yaml")
    assert saved.run.recipe == "thesis" and saved.method_config.temperature == 0.5
    with pytest.raises(ConfigError, match="run.recipe"):
        train(apply_overrides(new_config("simclr"), [*base, "--run.recipe=imagenet", "--data.train=/nonexistent",
                                                     f"--run.out={tmp_path / 'c'}"]))
