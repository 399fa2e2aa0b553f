"""Execute a notebook headless and print what each cell showed (text only): the demo's output.

python notebooks/run.py notebooks/01-quickstart.ipynb [--save OUT.ipynb]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, save: Path | None = None, timeout: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:
        if save:
            nbformat.write(nb, save)
    return nb


def text_of(output: nbformat.NotebookNode) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return output.get("data", {}).get("text/plain", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--save", type=Path, default=None, help="write the executed notebook here")
    args = parser.parse_args()
    try:
        nb = run(args.notebook, args.save)
    except CellExecutionError as exc:
        print(exc, file=sys.stderr)
        return 1
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"\n>>> {cell.source.splitlines()[0]}")
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                continue  # library log lines; errors would have stopped the run
            print(text_of(output).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
