"""Bad input to embed / neighbors / duplicates: one line naming the option or file and what to
do, exit status 2, and nothing written into --out."""
from __future__ import annotations

import pytest

from nolabel.cli import main
from tests.use.conftest import save_demo


@pytest.fixture
def setting(tmp_path, tiny_vit, cache_dir):
    photos = tmp_path / "photos"
    save_demo(photos, "train", 4, 32)
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.jpg"):
        (broken / name).write_bytes(b"garbage, not pixels")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG but truncated")
    return {"tmp": tmp_path, "vit": tiny_vit, "photos": str(photos), "empty": str(tmp_path / "empty"),
            "broken": str(broken)}


CASES = [
    # (argv with {placeholders}, words the message must hold)
    (["neighbors", "{vit}", "--data", "{photos}", "--query", "{tmp}/notes.txt"],
     ["--query", "notes.txt", "none of the 1 files listed", "give an image file"]),   # a .txt is a list
    (["neighbors", "{vit}", "--data", "{photos}", "--query", "{tmp}/fake.png"],
     ["--query", "fake.png", "give an image file"]),
    (["neighbors", "{vit}", "--data", "{photos}", "--query", "{tmp}/missing.jpg"],
     ["--query", "missing.jpg", "no such file or folder"]),
    (["neighbors", "{vit}", "--data", "{photos}", "--query", "{empty}"], ["--query", "no image files found"]),
    (["neighbors", "{vit}", "--data", "{photos}", "--query", "{tmp}/fake.png", "--k", "0"], ["--k 0", "at least 1"]),
    (["embed", "{vit}", "--data", "{empty}", "--out", "{tmp}/out/e.npy"],
     ["--data", "empty", "no image files found", "give a folder"]),
    (["neighbors", "{vit}", "--data", "{empty}", "--query", "{photos}"], ["--data", "no image files found"]),
    (["duplicates", "{vit}", "--data", "{empty}"], ["--data", "no image files found"]),
    (["duplicates", "{vit}", "--data", "{broken}"], ["--data", "broken", "could be read as an image",
                                                     "give a folder"]),
    (["embed", "{vit}", "--data", "{photos}", "--image-size", "20", "--out", "{tmp}/out/e.npy"],
     ["--image-size 20", "cannot read 20x20 images", "made for 32 px", "patch size 8", "leave the size out"]),
    (["duplicates", "{vit}", "--data", "{photos}", "--threshold", "1.5"],
     ["--threshold 1.5", "[-1, 1]", "leave it out"]),
    (["duplicates", "{vit}", "--data", "{photos}", "--threshold", "-1.01"], ["--threshold -1.01", "[-1, 1]"]),
    (["duplicates", "{vit}", "--data", "{photos}"], ["--data", "holds 4 readable images", "too few to derive",
                                                     "give --threshold"]),
    (["embed", "{vit}", "--data", "{photos}", "--out", "{tmp}/out/e.txt"], ["--out", "e.txt", ".npy", ".parquet"]),
    (["embed", "{vit}", "--data", "{photos}", "--out", "{tmp}/out/e.npy", "--pca", "0"], ["--pca 0", "at least 1"]),
    (["embed", "{vit}", "--data", "{photos}", "--out", "{tmp}/out/e.npy", "--pca", "5"],
     ["--pca 5", "allow 1 to 4"]),
    (["embed", "{vit}", "--data", "{photos}", "--out", "{tmp}/out/e.npy", "--batch-size", "0"], ["--batch-size 0"]),
    (["embed", "{tmp}/no-model", "--data", "{photos}", "--out", "{tmp}/out/e.npy"], ["no-model", "no such path"]),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(c[0][:1] + c[0][4:]) for c in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(setting, argv, words, capsys):
    command = argv[0]
    args = [a.format(**setting) for a in argv]
    if command in ("neighbors", "duplicates"):
        args += ["--out", str(setting["tmp"] / "out")]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured
    message = captured.err.strip()
    assert message.startswith(f"nolabel {command}: error: ") and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    assert not (setting["tmp"] / "out").exists()


def test_one_image_is_not_a_collection_of_duplicates(setting, capsys, tmp_path):
    single = tmp_path / "single"
    save_demo(single, "train", 1, 32)
    assert main(["duplicates", setting["vit"], "--data", str(single), "--threshold", "0.9",
                 "--out", str(tmp_path / "out")]) == 2
    assert "holds 1 readable image; duplicates need at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bad_query_file_is_refused_before_the_collection_is_read(setting, monkeypatch, capsys):
    import nolabel.use.collection as collection_module

    def no_reading(*args, **kwargs):
        raise AssertionError("the collection was read although the query is refused")

    monkeypatch.setattr(collection_module, "open_images", no_reading)
    assert main(["neighbors", setting["vit"], "--data", setting["photos"], "--query",
                 str(setting["tmp"] / "notes.txt"), "--out", str(setting["tmp"] / "out")]) == 2
    assert "--query" in capsys.readouterr().err
