import pytest

from nolabel.config import apply_overrides, new_config

# A DINO run small enough for a unit test: 64 demo images, a 1-block ViT, 4 steps an epoch.
TINY = ["--data.train=demo?n=64", "--run.epochs=2", "--run.batch_size=16", "--run.log_every=1",
        "--run.progress=false", "--model.backbone=vit_tiny", "--model.patch_size=8", "--model.depth=1",
        "--model.embed_dim=32", "--model.num_heads=2", "--dino.out_dim=64", "--dino.hidden_dim=64",
        "--dino.bottleneck_dim=16", "--dino.n_local_views=2"]


@pytest.fixture
def tiny_config(tmp_path):
    def make(out="run", extra=()):
        cfg = new_config("dino")
        apply_overrides(cfg, TINY + [f"--run.out={tmp_path / out}", *extra])
        return cfg
    return make
