"""`pipeline`: the command line. Each command calls one library function; heavy imports (torch,
onnxruntime) happen inside the commands so that `--help` is instant. Known errors become one line
on stderr and a non-zero exit; PRIVCOMP_DEBUG=1 shows the traceback."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="privcomp: train with DP, compress, export, and measure what each step leaks.",
)

T = TypeVar("T")
EXIT_USER_ERROR = 2


def _guarded(action: Callable[[], T]) -> T:
    from pipelines.errors import PrivcompError

    try:
        return action()
    except PrivcompError as exc:
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
    seed: Annotated[int | None, typer.Option(help="Seed for splits, init and noise")] = None,
    evaluate: Annotated[
        str | None, typer.Option(help="Attack the artifact after: each | last | none")
    ] = None,
) -> None:
    """Run stages in order; write the run directory and print the summary table."""

    def action() -> None:
        from rich.console import Console

        from pipelines.config import load_config
        from pipelines.progress import Reporter
        from pipelines.runner import run_pipeline
        from pipelines.table import summary_table

        overrides = list(set_ or [])
        if seed is not None:
            overrides.append(f"run.seed={seed}")
        if evaluate is not None:
            overrides.append(f'run.evaluate="{evaluate}"')
        cfg = load_config(config, overrides)
        directory = run_dir or _default_run_dir(stages, cfg)
        reporter = Reporter()
        summary = run_pipeline(stages, config=cfg, run_dir=directory, reporter=reporter)
        stdout = Console()  # the table is the command's output; progress went to stderr
        stdout.print(summary_table(summary))
        stdout.print(f"summary: {directory / 'summary.json'}", highlight=False)

    _guarded(action)


def _default_run_dir(stages: list[str], cfg: dict[str, Any]) -> Path:
    from pipelines.config import to_toml

    digest = hashlib.sha256((" ".join(stages) + to_toml(cfg)).encode()).hexdigest()[:8]
    return Path("runs") / f"{cfg['run']['dataset']}-{cfg['run']['model']}-{digest}"


@app.command("stages")
def list_stages() -> None:
    """What each stage needs, provides and costs in privacy."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.stages import STAGES

    table = Table(title="stages")
    for column in ("stage", "needs", "provides", "privacy cost", "what it does"):
        table.add_column(column)
    for name, cls in STAGES.items():
        needs = ", ".join(r.replace("|", " or ") for r in cls.requires)
        table.add_row(name, needs, ", ".join(cls.provides) or "-", cls.privacy_cost, cls.summary)
    Console().print(table)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="An ONNX file written by privcomp")],
) -> None:
    """Check an ONNX file in full and print what it promises (its privcomp metadata)."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        from compress.onnx_io import read_metadata
        from pipelines.errors import PrivcompError

        if not path.is_file():
            raise PrivcompError(f"no such file: {path}")
        metadata = read_metadata(path)
        table = Table(title=f"{path} · {path.stat().st_size:,} bytes")
        table.add_column("property")
        table.add_column("value")
        for key, value in metadata.items():
            table.add_row(key, value)
        if not metadata:
            table.add_row("-", "no metadata: not written by privcomp")
        Console().print(table)

    _guarded(action)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":
    main()
