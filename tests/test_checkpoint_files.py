"""Files written by nolabel.checkpoint (issue 17): atomic writes get the normal file mode."""
import json
import os
import stat

import pytest
import torch.nn as nn

from nolabel.atomic import atomic_write
from nolabel.runs import EXPORT_CONFIG, EXPORT_WEIGHTS, export_backbone


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def private_writer(tmp):        # like safetensors: the temporary file is created mode 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.close(fd)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write(tmp_path / "f.bin", private_writer)
    assert mode(tmp_path / "f.bin") == expected


def test_export_files_have_the_same_mode(tmp_path, umask):
    model = nn.Linear(2, 2)
    model.spec = {"name": "linear"}
    export_backbone(model, tmp_path, {})
    assert mode(tmp_path / EXPORT_WEIGHTS) == mode(tmp_path / EXPORT_CONFIG) == 0o644


def test_export_stores_the_run_folder_absolute(tmp_path, monkeypatch, capsys):
    from nolabel.cli import main
    from tests.train.conftest import TINY

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "run", "--method", "dino", "--run.epochs=1", *(o for o in TINY if not o.startswith("--run.epochs="))]) == 0
    assert main(["export", "run", "exp"]) == 0
    exported = json.loads((tmp_path / "exp" / EXPORT_CONFIG).read_text())
    assert exported["run"] == str((tmp_path / "run").resolve())
