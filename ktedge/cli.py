"""The `ktedge` command: one sub-command per stage, each reading/writing the run directory --out."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ktedge.errors import KtedgeError
from ktedge.progress import console


def _config(args: argparse.Namespace):
    from ktedge.config import load_config, parse_override

    return load_config(args.config, [parse_override(s) for s in args.set])


def cmd_train(args: argparse.Namespace) -> None:
    from ktedge.model.train import train

    cfg = _config(args)
    metrics = train(cfg, args.out)
    _print_train(metrics, Path(args.out))


def _print_train(metrics: dict, out: Path) -> None:
    from rich.table import Table

    name = metrics["metric"]
    lower = metrics["lower_is_better"]
    table = Table(title=f"held-out {name} ({metrics['held_out_faces']} faces, {'lower' if lower else 'higher'} is better)")
    table.add_column("model")
    table.add_column(name, justify="right")
    for key, label in (("canonical_alone", "canonical encoder alone"), ("kt_deploy", "KT deploy {t_k, t_c}"),
                       ("ensemble", "ensemble (all priors)")):
        table.add_row(label, f"{metrics[key][name]:.3f}")
    console.print(table)
    console.print(f"trained in {metrics['wall_s']:.0f} s -> {out / 'train' / 'checkpoint.pt'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktedge", description="Ship knowledge-token face models to phones.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, help_: str, fn, config: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
        if config:
            p.add_argument("--config", help="YAML config merged over the embedded default")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override one config value, e.g. --set train.adapter_epochs=10")
        p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(fn=fn)
        return p

    stage("train", "train priors, the canonical encoder and the KT-Adapter", cmd_train, config=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except KtedgeError as e:
        if args.debug:
            traceback.print_exc()
        print(f"ktedge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ktedge: interrupted", file=sys.stderr)
        return 130
    return 0
