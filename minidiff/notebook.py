"""Running a notebook headlessly, in a kernel of its own: what the course runner
(`python -m minidiff.run_course`) and the exercise report (`python -m minidiff.exercises report`)
share. The kernel talks over local sockets (ipc), not TCP ports, and inherits `env`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

# MathJax 2 for pages read offline: the copy that the jupyter-server-mathjax package ships. It has MathJax's
# STIX web fonts but not its TeX fonts, so the pages ask for STIX (config/local/minidiff.js): with the
# default settings the roots, bars and hats of formulas come apart from their letters.
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/minidiff"  # relative to a page
MATHJAX_FONTS = {
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
    "fast-preview": {"disabled": True},  # its quick preview would ask for the TeX fonts
    # the hidden MathML for screen readers would ask for them too (a \mathcal), though it is never drawn
    "AssistiveMML": {"styles": {".MJX_Assistive_MathML *": {"font-family": "inherit !important"}}},
}


def copy_mathjax(folder: Path) -> Path:
    """MathJax, with the fonts set as above, into folder/mathjax (once); returns that folder."""
    import jupyter_server_mathjax

    mathjax = folder / "mathjax"
    if not (mathjax / "MathJax.js").is_file():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", mathjax, dirs_exist_ok=True)
    config = f"MathJax.Hub.Config({json.dumps(MATHJAX_FONTS)});\n"
    config += 'MathJax.Ajax.loadComplete("[MathJax]/config/local/minidiff.js");\n'
    (mathjax / "config" / "local").mkdir(parents=True, exist_ok=True)
    (mathjax / "config" / "local" / "minidiff.js").write_text(config, encoding="utf-8")
    return mathjax


OnCell = Callable[[nbformat.NotebookNode, int], None]  # on_cell(cell, index), before each code cell runs


def execute_notebook(
    nb: nbformat.NotebookNode,
    folder: Path,
    env: dict[str, str],
    *,
    timeout: int = 1800,
    on_cell: OnCell | None = None,
    allow_errors: bool = False,
) -> str | None:
    """Run every code cell of `nb` in place (outputs included), in `folder`, with the environment
    variables `env` added. Stops at the first cell that raises unless `allow_errors`; returns that
    error's text, or None when every cell ran."""
    ipc = Path(tempfile.mkdtemp(prefix="minidiff-kernel-"))
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(ipc / "kernel"))  # local sockets, not TCP
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        NotebookClient(nb, km=km, timeout=timeout, allow_errors=allow_errors, on_cell_execute=on_cell,
                       resources={"metadata": {"path": str(folder)}}).execute()
        return None
    except CellExecutionError as error:
        return str(error)
    finally:
        if km.has_kernel:  # a kernel manager we made is ours to shut down: ask the kernel to exit and wait
            km.request_shutdown()  # (shutdown_kernel would interrupt it first: a KeyboardInterrupt in the log)
            km.finish_shutdown()
            km.cleanup_resources()
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
        shutil.rmtree(ipc, ignore_errors=True)
