import pytest

from nolabel.config import apply_overrides, new_config

# A DINO run small enough for a unit test: 64 demo images, a 1-block ViT, 4 steps an epoch.
# fp32 and 1 thread whatever the machine: --run.precision=auto picks bf16 on CPUs with native bf16
# and --run.threads=auto depends on the load (dist_setup), while the tests compare a run's numbers
# with a direct computation or with another run (the last bits depend on the thread count); the
# bf16 and auto paths have their own tests (tests/train/test_precision.py).
# --run.recipe=thesis: the tests compare a method with its paper's formulas and values; the small
# recipes (presets.apply_recipe) have their own tests (tests/test_recipes.py).
TINY = ["--data.train=demo?n=64", "--run.epochs=2", "--run.batch_size=16", "--run.log_every=1",
        "--run.progress=false", "--run.precision=fp32", "--run.threads=1", "--model.backbone=vit_tiny",
        "--model.patch_size=8", "--model.depth=1",
        "--model.embed_dim=32", "--model.num_heads=2", "--dino.out_dim=64", "--dino.hidden_dim=64",
        "--dino.bottleneck_dim=16", "--dino.n_local_views=2", "--run.recipe=thesis"]


@pytest.fixture
def tiny_config(tmp_path):
    def make(out="run", extra=()):
        cfg = new_config("dino")
        apply_overrides(cfg, TINY + [f"--run.out={tmp_path / out}", *extra])
        return cfg
    return make
