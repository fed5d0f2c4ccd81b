"""The ``nolabel`` command: train, eval, export, demo.

Every wrong option or value ends in one line that names it and what is accepted,
with exit status 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nolabel import __version__
from nolabel.names import BACKBONES, EXPORT_FORMATS, METHODS    # no torch here: --help and --version answer at once

_OVERRIDE = re.compile(r"^--[A-Za-z_][\w]*\.[A-Za-z_][\w]*=.*$")


class CliError(Exception):
    pass


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="pretrain a backbone with a self-supervised method", allow_abbrev=False,
                       description="Pretrain a backbone. Any config field can be set with --section.key=value "
                                   "(sections: data, model, optim, run, eval and the method's own, e.g. --dino.out_dim=4096).")
    p.add_argument("--method", default=None, help=f"method to train: {', '.join(METHODS)} (default: dino)")
    p.add_argument("--backbone", default=None, help=f"backbone: {', '.join(BACKBONES)} (default: vit_tiny up to "
                                                    "64 px, vit_small above)")
    p.add_argument("--data", default=None, help="training images: folder, .tar/.tar.gz, .txt/.csv list, cifar10:DIR, demo")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training images, at least 1 "
                                                            "(default 100; the demo preset's 25)")
    p.add_argument("--batch-size", type=int, default=None, help="total batch size over all processes")
    p.add_argument("--seed", type=int, default=None, help="random seed of the weights, views and batch order "
                                                          "(default 0); same seed on CPU, same run")
    p.add_argument("--recipe", default=None, choices=("auto", "small", "thesis"),
                   help="values for the fields you leave unset: small (measured to learn on small images "
                        "and 2 CPU cores in an hour), thesis (the papers' ImageNet values), auto (default: "
                        "small below 96 px); config.yaml records the one used (run.recipe)")
    p.add_argument("--out", required=True, help="run folder (config, checkpoints, metrics, plots)")
    p.add_argument("--resume", nargs="?", const=True, default=False, type=_resume_mode, metavar="auto",
                   help="continue the run in --out from its last checkpoint (a moved or copied run folder "
                        "continues where it is); --resume auto: continue the run in --out if there is one, "
                        "else start it; a run there with other options is refused (one command line for "
                        "every restart, e.g. torchrun --max-restarts), except run.threads, run.progress, "
                        "run.log_every, run.save_every(_steps), run.tensorboard and eval.batch_size")
    p.add_argument("--config", default=None, help="YAML file with config sections")


def _resume_mode(value: str) -> str:
    if value != "auto":
        raise argparse.ArgumentTypeError(f"{value!r}: give --resume alone, or --resume auto")
    return value


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate frozen features (one protocol, or all of them)")
    esub = p.add_subparsers(dest="eval_command", required=True, metavar="PROTOCOL")
    from nolabel.evaluate.commands import add_parsers     # `all` and every registered protocol
    add_parsers(esub)


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's backbone as safetensors, timm weights or TorchScript, "
                                      "with a JSON config")
    p.add_argument("run_dir", help="run folder (the --out of `nolabel train`)")
    p.add_argument("out_dir", help="folder to write the weights and config.json into")
    p.add_argument("--format", default="safetensors", choices=EXPORT_FORMATS,
                   help="safetensors: backbone.safetensors for nolabel.load_backbone (default); timm: "
                        "model.safetensors with timm's names (resnet18/50, vit_*_patch16); torchscript: "
                        "backbone.pt for torch.jit.load, no nolabel needed")


def _cluster_parser(sub) -> None:
    p = sub.add_parser("cluster", help="group an image collection with a backbone (k-means on its features)",
                       allow_abbrev=False)
    p.add_argument("model", help="run folder, exported backbone, random:<backbone> or pixels")
    p.add_argument("--data", required=True, help="data spec of the images to group")
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--out", required=True, help="output folder (assignments.csv, clusters.png, cluster_sizes.json)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def cmd_cluster(args) -> int:
    from nolabel.cluster_collection import cluster_collection

    summary = cluster_collection(args.model, args.data, args.k, args.out, image_size=args.image_size,
                                 batch_size=args.batch_size, device=args.device, seed=args.seed)
    nmi = f", NMI with the labels {summary['nmi']:.3f}" if summary.get("nmi") is not None else ""
    print(f"{args.k} clusters of {args.data} written to {args.out}{nmi}")
    return 0


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train on the built-in dataset (SimCLR by default) and compare k-NN "
                       "with random init and raw pixels", allow_abbrev=False)
    p.add_argument("--out", default="runs/demo", help="run folder; a run there is continued (default runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo preset's)")
    p.add_argument("--method", default=None, help="method to train (default: simclr, the fastest learner here)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run in --out first")


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of a run: config, training curves, "
                       "evaluation, skipped files, environment (opens offline)", allow_abbrev=False)
    p.add_argument("run_dir", metavar="RUN", help="run folder (the --out of `nolabel train`)")
    p.add_argument("--eval", dest="eval_dir", default=None, metavar="DIR",
                   help="eval folder to include (the --out of `nolabel eval all`: eval.json and its figures)")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")


def cmd_report(args) -> int:
    from nolabel.report import write_run_report

    out = write_run_report(args.run_dir, args.eval_dir, args.out)
    print(f"report: {out} (one file, images embedded; opens offline in any browser)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nolabel", description="Self-supervised visual representation learning.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"nolabel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _eval_parser(sub)
    _export_parser(sub)
    _cluster_parser(sub)
    from nolabel.use.commands import add_parsers as add_use_parsers
    add_use_parsers(sub)      # embed, neighbors, duplicates
    _demo_parser(sub)
    _report_parser(sub)
    return parser


def _explicit_settings(args, overrides: list[str]) -> list[str]:
    """The command-line options as ``section.key=value`` overrides, in order."""
    pairs = []
    for flag, key in (("backbone", "model.backbone"), ("data", "data.train"), ("epochs", "run.epochs"),
                      ("batch_size", "run.batch_size"), ("seed", "run.seed"), ("recipe", "run.recipe")):
        value = getattr(args, flag)
        if value is not None:
            pairs.append(f"{key}={value}")
    pairs.append(f"run.out={args.out}")
    return pairs + [o[2:] for o in overrides]


def cmd_train(args, overrides: list[str]) -> int:
    from nolabel.config import apply_overrides, load_yaml, new_config
    from nolabel.runs import CHECKPOINT, PREVIOUS
    from nolabel.presets import apply_demo_preset, is_demo
    from nolabel.train import train

    out = Path(args.out)
    settings = _explicit_settings(args, overrides)
    holds_run = (out / CHECKPOINT).exists() or (out / PREVIOUS).exists()
    if args.resume is True or (args.resume == "auto" and holds_run):
        return _report_train(train(_resumed_config(args, settings), resume=True))
    if args.config:
        cfg = load_yaml(args.config)
        if args.method and args.method != cfg.method:
            cfg_method = cfg.method
            raise CliError(f"--method {args.method} conflicts with method {cfg_method!r} in {args.config}")
    else:
        cfg = new_config(args.method or "dino")
    apply_overrides(cfg, settings)
    if not args.config and cfg.data.train and is_demo(cfg.data.train):
        apply_demo_preset(cfg)                     # the demo's CPU values, where no option was given
    if not cfg.data.train:
        raise CliError("train needs --data SPEC (a folder, .tar/.tar.gz, .txt/.csv list, cifar10:DIR or demo)")
    if holds_run:
        raise CliError(f"{out} already holds a run: continue it with --resume, or choose another --out")
    return _report_train(train(cfg))


# The settings a resumed run may change (a run moved to a machine with more cores, a bar turned off
# under a scheduler): they set how the run proceeds, not what it computes. Everything else, the
# data, model, optimisation, seed, precision and method values, must match the saved config.
RESUME_MAY_CHANGE = ("run.threads", "run.progress", "run.log_every", "run.save_every", "run.save_every_steps",
                     "run.tensorboard", "eval.batch_size")


def _resumed_config(args, settings: list[str]):
    """The saved config of the run in ``--out``, which ``--resume`` continues. The options given
    must agree with it; with ``--resume auto``, so must ``--config``'s values and the method
    the command line would start (dino without --method), since the same command line also
    starts the run."""
    from nolabel.config import apply_overrides, diff, load_yaml, set_value
    from nolabel.runs import CHECKPOINT, CONFIG_FILE, PREVIOUS

    out, flag = Path(args.out), "--resume" if args.resume is True else "--resume auto"
    # a missing or damaged checkpoint.pt with a readable previous one: train() says what to do
    if not ((out / CHECKPOINT).is_file() or (out / PREVIOUS).is_file()) or not (out / CONFIG_FILE).is_file():
        raise CliError(f"{flag}: {out} holds no checkpoint to continue from (expected {out / CHECKPOINT})")
    cfg = load_yaml(out / CONFIG_FILE)
    given = load_yaml(args.config) if args.config and flag != "--resume" else None
    method = args.method or (given.method if given else None) or (None if flag == "--resume" else "dino")
    if method and method != cfg.method:
        option = (f"--method {method}" if args.method else f"--config {args.config} (method {method})" if given
                  else f"{flag} without --method (dino)")
        raise CliError(f"{option}: the run in {out} trains {cfg.method}")
    cfg.run.out = args.out   # the folder is the run: moved, copied or renamed, it continues where it is
    changed = load_yaml(out / CONFIG_FILE)
    if given is not None:    # the file's values that a recipe does not fill (null: left to it)
        sections = given.to_dict()
        for key in sorted(given.explicit):
            section, name = key.split(".", 1)
            if sections[section][name] is not None:
                set_value(changed, key, sections[section][name], source=str(args.config))
    apply_overrides(changed, settings)
    changed.run.out = cfg.run.out
    differs = diff(cfg, changed)
    refused = [key for key in differs if key not in RESUME_MAY_CHANGE]
    if refused:
        raise CliError(f"{flag} keeps the run's saved config ({out / CONFIG_FILE}); these options differ "
                       f"from it: {', '.join(refused)}. Drop them, or start a new run with another --out "
                       f"(a resumed run may change only {', '.join(RESUME_MAY_CHANGE)})")
    for key in differs:     # how the run proceeds, not what it computes: taken, and config.yaml says so
        section, name = key.split(".", 1)
        set_value(cfg, key, getattr(getattr(changed, section), name), source=flag)
    return cfg


def _report_train(run_dir: Path) -> int:
    print(f"run folder: {run_dir}")
    return 0


def cmd_eval(args) -> int:
    from nolabel.evaluate.commands import run
    return run(args)


def cmd_export(args) -> int:
    from nolabel.config import load_yaml
    from nolabel.runs import CONFIG_FILE, export_backbone, is_run, load_encoder

    run = Path(args.run_dir)
    if not is_run(run):
        raise CliError(f"{run} is not a run folder (no {CONFIG_FILE} and checkpoint): give the --out of `nolabel train`")
    cfg = load_yaml(run / CONFIG_FILE)
    network, _ = load_encoder(run)
    meta = {"image_size": cfg.data.image_size, "method": cfg.method, "run": str(run.resolve()),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if args.format != "safetensors":
        from nolabel.export_formats import export_timm, export_torchscript
        write = export_timm if args.format == "timm" else export_torchscript
        usage = write(network, Path(args.out_dir), meta)
        print(f"exported {cfg.model.backbone} from {run} to {args.out_dir} as {args.format}: {usage}")
        return 0
    export_backbone(network, Path(args.out_dir), meta)
    print(f"exported {cfg.model.backbone} from {run} to {args.out_dir} (load with nolabel.load_backbone)")
    return 0


def cmd_demo(args, overrides: list[str]) -> int:
    from nolabel.demo_run import run_demo
    run_demo(Path(args.out), method=args.method, epochs=args.epochs, fresh=args.fresh, seed=args.seed,
             overrides=tuple(overrides))    # interrupted: TrainingInterrupted, exit status in main()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)     # --help and --version end here, before torch is imported
    overrides = [a for a in extra if _OVERRIDE.match(a)]
    unknown = [a for a in extra if not _OVERRIDE.match(a)]
    if unknown:
        if args.command == "train":
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (config fields are set as --section.key=value)")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides and args.command not in ("train", "demo"):
        parser.error(f"{overrides[0]}: --section.key=value options apply to `nolabel train` and `nolabel demo` only")
    from nolabel.config import ConfigError
    from nolabel.data import DataError
    from nolabel.train import TrainingError, TrainingInterrupted

    commands = {"train": lambda: cmd_train(args, overrides), "demo": lambda: cmd_demo(args, overrides),
                "eval": lambda: cmd_eval(args), "export": lambda: cmd_export(args),
                "cluster": lambda: cmd_cluster(args), "report": lambda: cmd_report(args)}
    try:
        if args.command in commands:
            return commands[args.command]()
        if args.command in ("embed", "neighbors", "duplicates"):
            from nolabel.use.commands import run as run_use
            return run_use(args)
    except TrainingInterrupted as exc:     # the checkpoint is written; `train && eval` stops here
        print(f"nolabel {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (CliError, ConfigError, DataError, TrainingError, ValueError, FileNotFoundError) as exc:
        print(f"nolabel {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nolabel: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
