"""Run benchmark scripts and write their sections into BENCHMARKS.md.

Each `benchmarks/bench_<name>.py` defines TITLE (str) and run() -> str (a Markdown body). Every
number in a section is measured in one run, side by side, so ratios survive a noisy machine.
`python benchmarks/run_all.py ladp` re-runs one section and leaves the others as they are.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Written by `make bench` (every section; hours on 2 cores) or `make bench SECTION=name` (one,\n"
    "the others left as they are). Numbers inside one section come from one run on one machine,\n"
    "the methods compared interleaved (benchmarks/interleave.py); compare ratios, not seconds.\n"
)


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def machine() -> str:
    """The machine in one line: CPU model, cores, torch threads and build."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )


def section(name: str, body: str, title: str) -> str:
    stamp = time.strftime("%Y-%m-%d")
    command = f"make bench SECTION={name}"
    return (
        f"<!-- bench:{name} -->\n## {title}\n\n_Measured {stamp} on {machine()} with "
        f"`{command}` (`python benchmarks/run_all.py {name}`)._\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->\n"
    )


def update(text: str, name: str, block: str) -> str:
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->\n", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + block


def main(names: list[str]) -> None:
    sys.path.insert(0, str(HERE.parent))
    chosen = names or available()
    unknown = set(chosen) - set(available())
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    for name in chosen:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}: {module.TITLE}", file=sys.stderr)
        block = section(name, module.run(), module.TITLE)
        # Read the file only now: another benchmark may have written its section meanwhile.
        text = OUTPUT.read_text() if OUTPUT.exists() else HEADER
        OUTPUT.write_text(update(text, name, block))  # per section: a long run keeps its work


if __name__ == "__main__":
    main(sys.argv[1:])
