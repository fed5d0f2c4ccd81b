"""``nolabel report`` and ``write_eval_html``: one self-contained HTML page built from a run
folder and an ``eval all`` folder (written here by hand, as train and eval all write them),
checked for its values, its embedded images and its escaping; bad inputs; and the page
rendered in headless Chromium (not blank, no console errors)."""
from __future__ import annotations

import base64
import io
import json
import platform
import re
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image

from nolabel.cli import main
from nolabel.config import new_config, save_yaml
from nolabel.report import write_eval_html, write_run_report

SETUP_LINE = "dino on demo?n=64: 64 images at 32 px, vit_tiny, 3 epochs, batch 16, cpu/fp32, 1 CPU threads"
SKIPPED = "/data/<b>x&y</b>.jpg"        # a file name that must be escaped
RANDOM_GRID = "/moved/away/my-eval/baselines/random/clustering_grid.png"   # where eval all wrote it


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def png_bytes(colour, size=(40, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def run_dir(tmp_path):
    """A 3-epoch DINO run folder: config.yaml, metrics.jsonl (steps, epochs, one k-NN),
    train.log and skipped_files.txt."""
    folder = tmp_path / "my-run"
    folder.mkdir()
    cfg = new_config("dino")
    cfg.data.train, cfg.model.backbone, cfg.run.epochs, cfg.optim.lr = "demo?n=64", "vit_tiny", 3, 0.000123456
    save_yaml(cfg, folder / "config.yaml")
    records = []
    for step in range(12):
        records.append({"type": "step", "epoch": step // 4, "step": step, "loss": 4.0 - 0.1 * step,
                        "lr": 1e-4 * step, "teacher_entropy": 2.0 + 0.05 * step, "kl": 0.3, "emb_std": 0.05})
        if step % 4 == 3:
            records.append({"type": "epoch", "epoch": step // 4, "step": step, "loss": (3.9, 3.8, 3.6543)[step // 4],
                            "teacher_entropy": 2.5, "kl": 0.3, "emb_std": 0.0471, "collapse_warnings": 0})
    records.append({"type": "knn", "epoch": 2, "step": 11, "knn_top1_k20": 43.75, "n_bank": 64})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "train.log").write_text(f"12:00:00 INFO {SETUP_LINE}\n12:00:09 INFO done\n")
    (folder / "skipped_files.txt").write_text(f"{SKIPPED}\tunreadable\ndemo/7.png\tused after a 9x upscale\n")
    return folder


@pytest.fixture
def eval_dir(tmp_path):
    """An ``eval all`` folder: eval.json (recorded figure paths from where it was written,
    one figure gone, a protocol of unknown shape, a baseline) and clustering_grid.png."""
    folder = tmp_path / "my-eval"
    folder.mkdir()
    (folder / "clustering_grid.png").write_bytes(png_bytes((200, 30, 30)))
    (folder / "baselines" / "random").mkdir(parents=True)
    (folder / "baselines" / "random" / "clustering_grid.png").write_bytes(png_bytes((30, 30, 200)))
    report = {
        "model": "runs/my-run", "architecture": "a vit_tiny (vit)", "train": "demo", "test": "demo:test",
        "image_size": 32, "patch_tokens": "none", "fast": True, "started": "2026-12-02T12:00:00+00:00",
        "seconds": 42.0,
        "features": {"train": {"n": 64, "dim": 32, "from_cache": False, "cache_file": "x.pt", "seconds": 0.5}},
        "protocols": {
            "knn": {"k": 20, "temperature": 0.07, "top1": 61.25, "top5": 93.5, "seconds": 0.2},
            "clustering": {"k=1x": {"k": 10, "nmi": 0.5123, "ami": 0.4, "ari": 0.3, "purity": 0.6},
                           "grid": "/moved/away/my-eval/clustering_grid.png", "n": 32, "seconds": 1.5},
            "tsne": {"png": "/moved/away/my-eval/tsne.png", "pca_dim": 10, "perplexity": 3, "seconds": 0.3},
            "newthing": {"score": 0.875, "seconds": 0.1},
        },
        "skipped": {"attention": "needs a ViT; <resnet> is not one"},
        "estimates": {"model": {"clustering": 3.0}},
        "baselines": {"random": {"model": "random:vit_tiny", "architecture": "a vit_tiny (vit)",
                                 "protocols": {"knn": {"k": 20, "temperature": 0.07, "top1": 11.5, "top5": 50.0},
                                               "clustering": {"k=1x": {"k": 10, "nmi": 0.1, "ami": 0.1, "ari": 0.1,
                                                                       "purity": 0.2}, "grid": RANDOM_GRID}},
                                 "skipped": {"newthing": "--skip"}}},
    }
    (folder / "eval.json").write_text(json.dumps(report))
    return folder


def embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)]


def row_of(html: str, text: str) -> str:
    """The table row holding ``text``."""
    return next(row for row in html.split("<tr>") if text in row)


def assert_self_contained(html: str) -> None:
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert "<script" not in html and "<link" not in html and "url(" not in html and "@import" not in html


def test_run_report_holds_config_curves_evaluation_skipped_files_and_environment(run_dir, eval_dir, tmp_path):
    out = write_run_report(run_dir, eval_dir, tmp_path / "report.html")
    html = out.read_text()
    assert_self_contained(html)
    assert "<td>lr</td><td>0.000123456</td>" in html and "<td>demo?n=64</td>" in html   # every config value, exact
    curves, grid, random_grid = embedded_images(html)
    width, height = Image.open(io.BytesIO(curves)).size
    assert width > 800 and height > 0.4 * width                    # metrics_figure's 6 panels, 3 a row
    assert grid == (eval_dir / "clustering_grid.png").read_bytes()   # found in the eval folder it moved to
    assert random_grid == (eval_dir / "baselines" / "random" / "clustering_grid.png").read_bytes()
    assert "<td>loss</td><td>3.654</td>" in html                     # the last epoch's values
    assert "<td>knn_top1_k20</td><td>43.75</td>" in html
    knn = row_of(html, "k=20, T=0.07")
    assert "61.25 % / 93.50 %" in knn and "11.50 % / 50.00 %" in knn    # the model's value and the baseline's
    clustering = row_of(html, "k-means k=10 (1x classes)")
    assert "0.512 / 0.400 / 0.300 / 0.600" in clustering and "0.100 / 0.100 / 0.100 / 0.200" in clustering
    assert "<td>n/a</td>" in row_of(html, "<td>score</td>")              # not run on the baseline
    assert "1.5 (est. 3)" in clustering and "<th>random init</th>" in html and "Not run on random init" in html
    assert "<td>score</td><td></td><td>0.875</td>" in html            # a protocol eval.md does not know
    assert "tsne.png is missing" in html
    assert "needs a ViT; &lt;resnet&gt; is not one" in html
    assert html.count("&lt;b&gt;x&amp;y&lt;/b&gt;.jpg") == 1 and "<b>x&y</b>" not in html
    assert SETUP_LINE in html and f"<td>python</td><td>{platform.python_version()}</td>" in html
    assert "not recorded by the run" in html


def test_report_defaults_to_the_run_folder_and_says_what_is_missing(run_dir, capsys):
    for name in ("metrics.jsonl", "skipped_files.txt", "train.log"):
        (run_dir / name).unlink()
    code, stdout, err = run(["report", str(run_dir)], capsys)
    assert code == 0, err
    html = (run_dir / "report.html").read_text()
    assert f"report: {run_dir / 'report.html'}" in stdout
    assert "no metrics.jsonl in the run folder" in html and "training skipped no files" in html
    assert "Not included: run <code>nolabel eval all" in html and not embedded_images(html)


def test_eval_html_is_written_beside_eval_md(eval_dir):
    path = write_eval_html(eval_dir)
    assert path == eval_dir / "eval.html"
    html = path.read_text()
    assert_self_contained(html)
    assert embedded_images(html) == [(eval_dir / "clustering_grid.png").read_bytes(),
                                     (eval_dir / "baselines" / "random" / "clustering_grid.png").read_bytes()]
    assert "61.25 % / 93.50 %" in row_of(html, "k=20, T=0.07") and "42 s in all (--fast schedules)" in html


def test_eval_html_reads_eval_json_defensively(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"protocols": {"knn": {"top1": 55.5}}, "baselines": 3}))
    html = write_eval_html(tmp_path).read_text()
    assert "<td>top1</td><td></td><td>55.5</td>" in html      # eval.md's row needs top5: listed key by key
    assert "baselines section of an unknown shape" in html and "<td>model</td><td>-</td>" in html
    (tmp_path / "eval.json").write_text("{}")
    assert "eval.json lists no protocol results" in write_eval_html(tmp_path).read_text()


@pytest.mark.parametrize("case,message", [
    ("no config", "is not a run folder (no config.yaml): give the --out of `nolabel train`"),
    ("eval without eval.json", "holds no eval.json: give the --out of `nolabel eval all`"),
    ("eval missing", "no such folder"),
    ("eval not json", "is not readable JSON"),
    ("out folder missing", "does not exist (create it first)"),
    ("out is a folder", "is a folder: give a file name"),
])
def test_bad_input_names_it_and_writes_nothing(case, message, run_dir, eval_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    out.write_text("the previous report")
    args = {"run": run_dir, "eval": eval_dir, "out": out}
    if case == "no config":
        (run_dir / "config.yaml").unlink()
    elif case == "eval without eval.json":
        (eval_dir / "eval.json").unlink()
    elif case == "eval missing":
        args["eval"] = tmp_path / "nowhere"
    elif case == "eval not json":
        (eval_dir / "eval.json").write_text('{"protocols": ')
    elif case == "out folder missing":
        args["out"] = tmp_path / "nowhere" / "report.html"
    else:
        args["out"] = tmp_path
    code, _, err = run(["report", str(args["run"]), "--eval", str(args["eval"]), "--out", str(args["out"])], capsys)
    assert code == 2 and err.startswith("nolabel report: error: ") and message in err, err
    culprit = {"no config": run_dir, "out folder missing": args["out"], "out is a folder": tmp_path}.get(
        case, args["eval"])
    assert str(culprit) in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "the previous report" and not list(tmp_path.glob(".*.tmp-*"))
    assert not (run_dir / "report.html").exists()


# --- in a browser -----------------------------------------------------------------------------------------

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--window-size=1200,1600")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("headless Chromium is not installed: `make test` installs Debian's chromium package with "
                    "scripts/ensure_chromium.sh where apt-get can run, and it could not here")
    return path


def render(html_path, screenshot) -> list[str]:
    """Screenshot ``html_path`` in headless Chromium; return the page's console messages."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               f"--screenshot={screenshot}", html_path.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and screenshot.is_file(), done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def looks_blank(screenshot) -> bool:
    """Almost all one colour: under 2 % of the pixels differ from the most common one."""
    image = Image.open(screenshot).convert("RGB")
    counts = image.getcolors(maxcolors=image.width * image.height)
    return max(n for n, _ in counts) > 0.98 * image.width * image.height or len(counts) < 20


def test_report_renders_in_headless_chromium(run_dir, eval_dir, tmp_path):
    page = write_run_report(run_dir, eval_dir, tmp_path / "report.html")
    console = render(page, tmp_path / "report.png")
    assert console == [] and not looks_blank(tmp_path / "report.png"), console
    # the checks catch what they look for: a blank page that logs an error
    planted = tmp_path / "planted.html"
    planted.write_text('<!DOCTYPE html><html><body><script>console.error("planted")</script></body></html>')
    console = render(planted, tmp_path / "planted.png")
    assert any('"planted"' in line for line in console) and looks_blank(tmp_path / "planted.png")
