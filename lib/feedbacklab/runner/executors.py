"""Executors: how one job runs. The default is papermill with the ``feedbacklab`` kernel, in the notebook's own
directory; ``ensure_kernel`` makes that kernelspec point at this interpreter. Tests pass their own executor, and
``feedbacklab.sweeps`` runs whole profiles as Ray tasks.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from .planning import Job
from .profiles import _quiet_papermill

KERNEL_NAME = "feedbacklab"
KERNEL_DISPLAY_NAME = "Python (feedbacklab)"


class KernelError(RuntimeError):
    """The ``feedbacklab`` kernelspec cannot be made to point at this interpreter."""


def ensure_kernel(name: str = KERNEL_NAME, prefix: str = sys.prefix) -> Path:
    """Make sure kernelspec ``name`` runs ``sys.executable``; register it under ``prefix`` if not."""
    from ipykernel.kernelspec import install

    if _kernel_python(name) == os.path.abspath(sys.executable):
        return _kernel_dir(name)
    install(kernel_name=name, prefix=prefix, display_name=KERNEL_DISPLAY_NAME)
    found = _kernel_python(name)
    if found != os.path.abspath(sys.executable):
        raise KernelError(
            f"kernel {name!r} resolves to {_kernel_dir(name)} running {found}, not {sys.executable}, "
            f"even after registering it under {prefix}; remove the other one with "
            f"`jupyter kernelspec remove {name}` and rerun"
        )
    return _kernel_dir(name)


def _kernel_python(name: str) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        return None
    return os.path.abspath(argv[0]) if argv else None


def _kernel_dir(name: str) -> Path:
    from jupyter_client.kernelspec import KernelSpecManager

    return Path(KernelSpecManager().get_kernel_spec(name).resource_dir)


Executor = Callable[[Job], None]


def papermill_executor(kernel_name: str = KERNEL_NAME) -> Executor:
    """Run a job with papermill in the notebook's directory; raises PapermillExecutionError on error."""
    import papermill as pm
    import zmq
    from traitlets.config import Config

    # CurveZMQ-encrypt the kernel's sockets when possible (and silence ipykernel's plain-TCP warning).
    config = Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()

    def execute(job: Job) -> None:
        with _quiet_papermill():
            pm.execute_notebook(
                str(job.notebook), str(job.executed), parameters=job.parameters,
                kernel_name=kernel_name, language="python", cwd=str(job.notebook.parent),
                progress_bar=False, log_output=False, config=config,
            )

    return execute
