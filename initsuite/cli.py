"""The ``initsuite`` command (also ``python -m initsuite``): what the Make targets do, from any folder.

    initsuite run   [overrides]            one instrumented run         (make run ARGS=...)
    initsuite sweep [overrides]            a preset's grid to its report (make sweep EXP=... ARGS=...)
    initsuite paper [--scale S] [overrides] Glorot & Bengio 2010          (make paper)
    initsuite collect SWEEP                gather a sweep's tables       (make collect SWEEP=...)
    initsuite figures SWEEP                redraw figures + report.html  (make figures SWEEP=...)
    initsuite tensorboard SWEEP            TensorBoard event files       (make tensorboard SWEEP=...)
    initsuite bench [--quick ...]          the instrumentation's cost    (make bench)

``run`` and ``sweep`` take Hydra overrides (``init=he_normal model.depth=10``,
``experiment=tn_vs_xavier``); the configs ship inside the package, so an installed
copy needs no checkout. Everything else takes a folder, and reads tables only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from initsuite.configure import compose, user_message

COMMANDS = {
    "run": "one instrumented training run: initsuite run init=he_normal activation=relu model.depth=10",
    "sweep": "a resumable sweep of a preset's grid, collected, drawn and reported: initsuite sweep experiment=smoke",
    "paper": "reproduce Glorot & Bengio (2010): sweep, figures, Table 1, report (--scale tiny|default|full|long)",
    "collect": "gather a sweep's run folders into its tables: initsuite collect <sweep folder>",
    "figures": "redraw a sweep's figures and report.html from its tables: initsuite figures <sweep folder>",
    "tensorboard": "write TensorBoard event files from a sweep's tables: initsuite tensorboard <sweep folder>",
    "bench": "the instrumentation's cost against plain Keras: initsuite bench [--quick]",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: initsuite <command> [arguments]   (python -m initsuite ...)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "initsuite <command> --help for a command's own options."]
    return "\n".join(lines)


def _is_hydra_key(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def covering_jobs(jobs: Sequence[Sequence[str]]) -> List[List[str]]:
    """The jobs of a grid that together contain every value of every axis at least once
    (about the sum of the axis lengths, not their product): enough to find a bad value."""
    seen, out = set(), []
    for job in jobs:
        new = set(job) - seen
        if new or not out:
            out.append(list(job))
            seen |= new
    return out


def check_cli(args: Sequence[str], sweep: bool = False) -> None:
    """Compose what a command line asks for (every value of every swept axis) and run the
    suite's checks (:func:`initsuite.run.train.validate`) before Hydra starts and before any
    folder is made; a mistake prints one line ``initsuite: <key...>: <what is wrong>`` and
    exits with status 2. Command lines with Hydra flags (``--cfg``, ``--help``...) are left
    to Hydra."""
    args = [a for a in args if a not in ("--multirun", "-m")]
    if any(a.startswith("-") for a in args):
        return
    overrides = [a for a in args if not _is_hydra_key(a)]
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from initsuite.run.train import validate
        from initsuite.sweep import DEFAULT_EXPERIMENT, job_overrides

        if sweep and not any(a.lstrip("+").startswith("experiment=") for a in overrides):
            overrides.append(f"experiment={DEFAULT_EXPERIMENT}")
        parsed = OverridesParser.create().parse_overrides(overrides)
        base = compose([o.input_line for o in parsed if not o.is_sweep_override()], return_hydra_config=True)
        params = base.hydra.sweeper.params if sweep else None
        from omegaconf import OmegaConf

        jobs = job_overrides(OmegaConf.to_container(params) if params else {}, overrides)
        for job in covering_jobs(jobs):
            validate(compose(job))
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            return  # not a mistake we know how to explain: Hydra reports it as it always has
        print(f"initsuite: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _hydra_main(task, argv: Sequence[str], prog: str) -> None:
    """Run ``task(cfg)`` under ``@hydra.main`` with the packaged configs and ``argv`` as its command line."""
    import hydra

    import initsuite.config  # noqa: F401  (registers the typed schema)
    from initsuite.configure import CONF_DIR

    sys.argv = [prog, *argv]
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)()


def cmd_run(argv: Sequence[str]) -> None:
    from initsuite.run.train import run_cli

    check_cli(list(argv))  # a mistake: one line naming the key, exit 2, before any folder is made
    _hydra_main(run_cli, argv, "initsuite run")


def cmd_sweep(argv: Sequence[str]) -> None:
    from initsuite.sweep import sweep_argv, sweep_job

    check_cli(list(argv), sweep=True)  # a mistake: one line naming the key, exit 2, before any folder
    args = sweep_argv(["initsuite sweep", *argv])  # --multirun, the preset, the sweep callback
    _hydra_main(sweep_job, args[1:], "initsuite sweep")


def _folder(argv: Sequence[str], command: str) -> Path:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(f"usage: initsuite {command} <sweep folder>\n\n{COMMANDS[command]}", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    folder = Path(argv[0]).expanduser()
    if not folder.is_dir():
        print(f"initsuite {command}: no folder {folder}", file=sys.stderr)
        raise SystemExit(2)
    return folder


def cmd_collect(argv: Sequence[str]) -> None:
    from initsuite.sweep import collect_main

    raise SystemExit(collect_main(list(argv)))


def cmd_figures(argv: Sequence[str]) -> None:
    from initsuite.analysis import report

    sweep = _folder(argv, "figures")
    if not (sweep / "runs.parquet").exists():  # not collected yet: collect now (imports the sweep machinery)
        from initsuite.sweep import collect

        collect(sweep)
    print(report.build(sweep))


def cmd_tensorboard(argv: Sequence[str]) -> None:
    from initsuite.sweep.export import write_tensorboard

    log_dir = write_tensorboard(_folder(argv, "tensorboard"))
    print(f"view with: tensorboard --logdir {log_dir}")


def cmd_bench(argv: Sequence[str]) -> None:
    from initsuite.bench import main as bench_main

    bench_main(list(argv))


def cmd_paper(argv: Sequence[str]) -> None:
    """The glorot2010 sweep at a scale, its Fig. 2 run, then the paper's figures, Table 1 and report."""
    import argparse

    from initsuite.analysis import paper, report

    p = argparse.ArgumentParser(prog="initsuite paper", description=COMMANDS["paper"])
    p.add_argument("--scale", default=os.environ.get("PAPER_SCALE") or None,
                   help=f"one of {', '.join(paper.SCALES)} (default: default; or $PAPER_SCALE)")
    p.add_argument("--redraw", type=Path, metavar="SWEEP", help="only redraw an existing glorot2010 sweep folder")
    p.add_argument("overrides", nargs="*", help="Hydra overrides added to the sweep, e.g. dataset=fashion_mnist")
    a = p.parse_args(list(argv))
    sweep: Optional[Path] = a.redraw
    if sweep is None:
        try:
            scale = paper.scale_overrides(a.scale)
        except ValueError as e:
            p.error(str(e))
        base = [sys.executable, "-m", "initsuite", "sweep", f"experiment={paper.EXPERIMENT}", *scale]
        for extra in ([], paper.FIG2_RUN):
            out = _run_tee([*base, *extra, *a.overrides])
            sweep = Path(out.strip().splitlines()[-1])  # a sweep prints its folder last
    if not (sweep / "runs.parquet").exists():
        from initsuite.sweep import collect

        collect(sweep)
    html = report.build(sweep)
    print(f"Table 1: {sweep / 'table1.md'}\nfigures: {sweep / 'figures'}\nreport:  {html}\n{sweep}")


def _run_tee(cmd: List[str]) -> str:
    """Run ``cmd``, showing its output as it comes, and return its stdout; stop on failure."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        out.append(line)
    if proc.wait():
        raise SystemExit(proc.returncode)
    return "".join(out)


HANDLERS = {"run": cmd_run, "sweep": cmd_sweep, "paper": cmd_paper, "collect": cmd_collect,
            "figures": cmd_figures, "tensorboard": cmd_tensorboard, "bench": cmd_bench}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is noise here
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    handler = HANDLERS.get(command)
    if handler is None:
        import difflib

        close = difflib.get_close_matches(command, list(HANDLERS), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        print(f"initsuite: unknown command {command!r}.{hint} Valid commands: {', '.join(HANDLERS)}.",
              file=sys.stderr)
        raise SystemExit(2)
    handler(rest)


if __name__ == "__main__":
    main()
