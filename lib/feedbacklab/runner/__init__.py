"""Profiles → papermill runs → HTML → ``reports/<profile>/index.html``, in four modules read top to bottom:
``profiles`` (parse and check profiles, the parameters notebooks declare), ``planning`` (jobs, inputs keys, state
files), ``executors`` (papermill and its kernel), ``execution`` (``run_profile``). Sweeps over seeds and grids, and
their Ray executor, are ``feedbacklab.sweeps``.


A profile is ``notebooks/profiles/<name>.yaml`` (schema in the header of each
profile file): shared ``parameters`` plus an ordered list of ``notebooks``, each
a bare name or ``{name, parameters}``. Everything is validated before anything
runs: the profile and notebooks exist, each notebook has exactly one cell tagged
``parameters`` declaring ``output_dir``, and every profile parameter is declared
by the notebook(s) it is given to (read with papermill's ``inspect_notebook``).

Each notebook runs with the ``feedbacklab`` kernel in its own directory, with
``FEEDBACKLAB_PROFILE=<profile>`` in the kernel's environment, into
``reports/<profile>/<name>.ipynb`` (+ ``.html``, + ``<name>/metrics.json``).
A per-notebook state file ``reports/<profile>/.state/<name>.json`` is removed
when the notebook starts and written atomically when it ends; a rerun skips a
notebook whose state says ``ok`` for the same inputs (notebook file hash,
parameters, hash of the ``feedbacklab`` sources), so an interrupted batch picks
up where it stopped. ``index.html`` is rewritten before and after every notebook.
"""
from __future__ import annotations

from .execution import BatchResult, run_profile
from .executors import KERNEL_DISPLAY_NAME, KERNEL_NAME, Executor, KernelError, ensure_kernel, papermill_executor
from .planning import LIB_DIR, Job, file_hash, inputs_key, is_current, plan, read_state, select, source_hash
from .profiles import (ENTRY_KEYS, OUTPUT_DIR_PARAM, PROFILE_KEYS, REQUIRES_KEYS, ConfigError, Profile,
                       declared_parameters, list_profiles, load_profile)

__all__ = ["BatchResult", "run_profile", "KERNEL_DISPLAY_NAME", "KERNEL_NAME", "Executor", "KernelError",
           "ensure_kernel", "papermill_executor", "LIB_DIR", "Job", "file_hash", "inputs_key", "is_current", "plan",
           "read_state", "select", "source_hash", "ENTRY_KEYS", "OUTPUT_DIR_PARAM", "PROFILE_KEYS", "REQUIRES_KEYS",
           "ConfigError", "Profile", "declared_parameters", "list_profiles", "load_profile"]
