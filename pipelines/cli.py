"""`pipeline`: the command line. Each command calls one library function; heavy imports (torch,
onnxruntime) happen inside the commands so that `--help` is instant. Known errors become one line
on stderr and a non-zero exit; PRIVCOMP_DEBUG=1 shows the traceback."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="privcomp: train with DP, compress, export, and measure what each step leaks.",
)

if TYPE_CHECKING:
    from pipelines.config import Config

T = TypeVar("T")
EXIT_USER_ERROR = 2
EXIT_AUDIT_FAILED = 3
EvaluateMode = Literal["each", "last", "none"]  # pipelines.settings.run.EVALUATE_MODES
EXECUTOR_HELP = (
    "Where parallel work runs: local (process pool) | serial | ray (at run.ray_address); "
    "default: [run] executor"
)


def package_version() -> str:
    """The installed distribution's version; the runner's (what summary.json records) when
    privcomp runs from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("privcomp")
    except PackageNotFoundError:
        from pipelines.runner import VERSION

        return VERSION


def _print_version(value: bool) -> None:
    if value:
        print(f"privcomp {package_version()}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """privcomp: train with DP, compress, export, and measure what each step leaks."""


def _guarded(action: Callable[[], T]) -> T:
    from models.errors import UserError

    try:
        return action()
    except UserError as exc:
        if os.environ.get("PRIVCOMP_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; run again to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("PRIVCOMP_DEBUG"):
            raise
        line = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: {type(exc).__name__}: {line} (PRIVCOMP_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        raise typer.Exit(1) from None


@app.command()
def run(
    stages: Annotated[list[str], typer.Argument(help="Stages in order, e.g. train-ladp prune")],
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: section.key=value")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/<id>)")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0, help="Seed of the split, init, references and attacks (not of DP noise)"
        ),
    ] = None,
    evaluate: Annotated[
        EvaluateMode | None,
        typer.Option(help="Attack the artifact after each stage, the last, none"),
    ] = None,
    rerun_dp: Annotated[
        bool,
        typer.Option(
            "--rerun-dp",
            help="Run again a DP stage whose earlier release in this run dir is gone or "
            "changed, composing every earlier release in the ledger",
        ),
    ] = False,
    defense: Annotated[
        str | None,
        typer.Option(help="Train with a membership-inference defense ([defense.NAME]; not DP)"),
    ] = None,
    executor: Annotated[str | None, typer.Option(help=EXECUTOR_HELP)] = None,
) -> None:
    """Run stages in order; write the run directory and its report; print the summary table."""

    def action() -> None:
        from rich.console import Console
        from rich.markup import escape

        from pipelines.config import load_config, with_run_settings
        from pipelines.errors import PrivcompError
        from pipelines.progress import Reporter
        from pipelines.report import write_report
        from pipelines.runner import run_pipeline
        from pipelines.table import summary_table

        cfg = with_run_settings(
            load_config(config, set_),
            seed=seed,
            evaluate=evaluate,
            defense=defense,
            executor=executor,
        )
        if defense is not None and "train" not in stages:
            raise PrivcompError("--defense applies to the train stage, which this run lacks")
        directory = run_dir or _default_run_dir(stages, cfg)
        reporter = Reporter()
        summary = run_pipeline(
            stages, config=cfg, run_dir=directory, reporter=reporter, rerun_dp=rerun_dp
        )
        stdout = Console()  # the table is the command's output; progress went to stderr
        stdout.print(summary_table(summary))
        stdout.print(f"summary: {escape(str(directory / 'summary.json'))}", highlight=False)
        with reporter.task("writing the report"):
            page = write_report([directory])
        stdout.print(f"report: {escape(str(page))} (and report.md beside it)", highlight=False)

    _guarded(action)


def _default_run_dir(stages: list[str], cfg: Config) -> Path:
    from pipelines.config import to_toml

    digest = hashlib.sha256((" ".join(stages) + to_toml(cfg)).encode()).hexdigest()[:8]
    return Path("runs") / f"{cfg.run.dataset}-{cfg.run.model}-{digest}"


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="One run dir, several to compare, or a sweep folder")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder (default: the run dir; several: runs/report-<id>)"),
    ] = None,
) -> None:
    """Write report.html (self-contained), report.md and report.json for run dirs."""

    def action() -> None:
        from pipelines.report import SWEEP_FILE, write_report, write_sweep_report

        [first, *others] = run_dirs
        if not others and (first / SWEEP_FILE).is_file() and not (first / "summary.json").exists():
            print(f"report: {write_sweep_report(first, out)}")
        else:
            print(f"report: {write_report(run_dirs, out)}")

    _guarded(action)


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: section.key=value")
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Every key, its default and what it does")
    ] = False,
) -> None:
    """Print the resolved configuration as TOML (what a run dir's config.toml would hold)."""

    def action() -> None:
        from pipelines.config import load_config, to_toml
        from pipelines.settings.docs import markdown_table

        print(markdown_table() if markdown else to_toml(load_config(config, list(set_ or []))))

    _guarded(action)


@app.command("stages")
def list_stages() -> None:
    """What each stage needs, provides and costs in privacy."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from pipelines.stages import STAGES

    table = Table(title="stages")
    for column in ("stage", "needs", "provides", "privacy cost", "what it does"):
        table.add_column(column, overflow="fold")
    for name, cls in STAGES.items():
        needs = ", ".join(r.replace("|", " or ") for r in cls.requires)
        cells = (name, needs, ", ".join(cls.provides) or "-", cls.privacy_cost, cls.summary)
        table.add_row(*(escape(cell) for cell in cells))
    Console().print(table)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="An ONNX file written by privcomp")],
) -> None:
    """Check an ONNX file in full and print what it promises (its privcomp metadata)."""

    def action() -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from models.onnx_io import read_metadata
        from pipelines.errors import PrivcompError
        from pipelines.privacy_card import CARD_FILE

        if not path.is_file():
            raise PrivcompError(f"no such file: {path}")
        metadata = read_metadata(path)  # the file's own text: escaped wherever rich prints it
        table = Table(title=escape(f"{path} · {path.stat().st_size:,} bytes"))
        table.add_column("property", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, value in metadata.items():
            table.add_row(escape(key), escape(value))
        if not metadata:
            table.add_row("-", "no metadata: not written by privcomp")
        console = Console()
        console.print(table)
        card = path.parent / CARD_FILE
        if card.is_file():
            console.print(f"privacy card: {escape(str(card))}", highlight=False)
        for line in inspect_warnings(metadata):
            console.print(f"[bold red]warning:[/bold red] {escape(line)}", highlight=False)

    _guarded(action)


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a DP training stage")],
    trials: Annotated[int, typer.Option(help="Short trainings per world")] = 250,
    steps: Annotated[int, typer.Option(help="Steps per training (the canary is in each)")] = 2,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: the run's [run] workers)")
    ] = None,
    executor: Annotated[str | None, typer.Option(help=EXECUTOR_HELP)] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help='Ray cluster: "auto" | HOST:PORT (default: the run\'s run.ray_address)'),
    ] = None,
) -> None:
    """Empirically audit the run's DP training mechanism; exit 3 if a lower bound beats ε."""

    def action() -> bool:
        from pipelines.audit import AUDIT_FILE, audit_run
        from pipelines.progress import Reporter

        report = audit_run(
            run_dir,
            trials=trials,
            steps=steps,
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            reporter=Reporter(),
        )
        print(report.line())
        print(f"details: {run_dir / AUDIT_FILE}")
        return report.passed

    if not _guarded(action):
        raise typer.Exit(EXIT_AUDIT_FAILED)


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@app.command("compare-defenses")
def compare_defenses(
    defenses: Annotated[
        str | None, typer.Option(help="Comma-separated defenses (default: all eight)")
    ] = None,
    model: Annotated[str, typer.Option(help="cnn | resnet18 | mlp")] = "cnn",
    dataset: Annotated[str, typer.Option(help="Data set (run.dataset)")] = "mnist5k",
    epsilon: Annotated[
        str, typer.Option(help="Comma-separated ε grid of the DP models")
    ] = "1,3,8,30,100",
    canaries: Annotated[int, typer.Option(help="Member and as many non-member canaries")] = 250,
    references: Annotated[int, typer.Option(help="References per heuristic method")] = 8,
    dp_references: Annotated[int, typer.Option(help="References per DP method")] = 4,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Methods trained at once (default: [run] workers)")
    ] = None,
    executor: Annotated[str | None, typer.Option(help=EXECUTOR_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Comparison folder")] = Path("runs/defense-study"),
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: section.key=value")
    ] = None,
) -> None:
    """Train the undefended model, each defense and DP over an ε grid on the same members;
    attack each adaptively; compare each defense with DP at equal test accuracy."""

    def action() -> None:
        from pipelines.errors import PrivcompError
        from pipelines.study import StudyOptions, run_study
        from privacy.defenses import DEFENSES

        try:
            grid = tuple(float(e) for e in _items(epsilon))
        except ValueError:
            message = f"--epsilon must be numbers separated by commas, got {epsilon!r}"
            raise PrivcompError(message) from None
        if defenses is not None and not _items(defenses):
            raise PrivcompError(f"--defenses names no defense: {defenses!r}")
        options = StudyOptions(
            out=out,
            defenses=tuple(_items(defenses)) if defenses else tuple(DEFENSES),
            model=model,
            dataset=dataset,
            epsilons=grid,
            canaries=canaries,
            references=references,
            dp_references=dp_references,
            workers=workers,
            executor=executor,
            config=config,
            overrides=tuple(set_ or ()),
        )
        run_study(options)
        print(f"study: {out / 'study.md'} (figures in {out / 'figures'})")

    _guarded(action)


@app.command()
def sweep(
    stages: Annotated[list[str], typer.Argument(help="Stages in order, e.g. train-ladp prune")],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="One axis of the grid: section.key=v1,v2,... (each value as --set reads it); "
            "repeat for more keys"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (default runs/sweep-<digest>)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Points run at once (default: [run] workers)")
    ] = None,
    executor: Annotated[str | None, typer.Option(help=EXECUTOR_HELP)] = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: section.key=value")
    ] = None,
) -> None:
    """Run the stages at every point of a grid of settings (one run dir each, in parallel,
    resumable, references shared); sweep.json gives each point's ε and the composed ε."""

    def action() -> None:
        from dataclasses import replace

        from pipelines.sweep import SWEEP_FILE, SweepOptions, default_out, run_sweep

        options = SweepOptions(
            stages=tuple(stages),
            grid=tuple(grid or ()),
            out=out,
            workers=workers,
            executor=executor,
            config=config,
            overrides=tuple(set_ or ()),
        )
        folder = out or default_out(options)
        run_sweep(replace(options, out=folder))
        print(f"sweep: {folder / SWEEP_FILE}")
        print(f"report: {folder / 'report.html'} (and report.md beside it)")

    _guarded(action)


def inspect_warnings(metadata: dict[str, str]) -> list[str]:
    """What `pipeline inspect` says in words beside the table: reproducible noise, and attack
    statistics of the members inside a file that ships."""
    import json

    from privacy.randomness import REPRODUCIBLE, REPRODUCIBLE_WARNING

    lines = []
    if json.loads(metadata.get("privcomp.noise", "null")) == REPRODUCIBLE:
        lines.append(REPRODUCIBLE_WARNING)
    if "privcomp.attack.note" in metadata:
        lines.append(f"privcomp.attack.*: {json.loads(metadata['privcomp.attack.note'])}")
    return lines


def main() -> None:
    """The console entry point: a usage error (a bad option value, a missing argument) is one
    line on stderr and exit 2, like every other bad input."""
    from click.exceptions import Abort, ClickException, NoArgsIsHelpError

    try:
        code = app(standalone_mode=False)
    except Abort:
        sys.exit(130)
    except NoArgsIsHelpError as exc:  # bare `pipeline`: the help
        exc.show()
        sys.exit(EXIT_USER_ERROR)
    except ClickException as exc:
        print(f"error: {' '.join(exc.format_message().split())} (see --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
