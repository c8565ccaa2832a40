"""Pre-flight check of a profile: does every model id, dataset path, GPU and the disk space it asks for exist?

``python -m feedbacklab check --profile paper`` (and ``run``, before any notebook starts) resolves, for every notebook
of the profile, the parameters that name a model (``generator``, ``clip``, ``captioner``, a reward name…) or a
dataset path (``tia2_release``, ``imagerewarddb``, ``human_store``…), with the profile's value or the notebook's
literal default. A model resolves when it is shipped, a local directory, or a hub repository that is in the local
Hugging Face cache or reachable; a path when it exists. A ``device: cuda`` needs a CUDA GPU; the profile's
``requires: {disk_gb: N}`` that much free disk under the reports folder. Every problem is collected, so one run
prints the whole list, before anything expensive starts.
"""
from __future__ import annotations

import ast
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

#: parameter name → the kind of model it names (``models.registry`` kinds, plus rewards).
MODEL_PARAMETERS = {"generator": "generator", "other_generator": "generator", "clip": "clip",
                    "captioner": "captioner", "clean_captioner": "captioner", "ddpo_reward": "reward",
                    "real_rewards": "reward"}
#: parameter name → what must be at that path (a short description for the message).
PATH_PARAMETERS = {"tia2_release": "the TIA2 release folder", "published_scores": "a TextNorm alignment_scores JSON",
                   "imagerewarddb": "the ImageRewardDB release folder (parquet files)",
                   "richhf_release": "RichHF-18K's folder of {train,dev,test}.tfrecord",
                   "richhf_prompts": "a JSON {filename: prompt} of RichHF-18K's Pick-a-Pic captions",
                   "richhf_images": "a folder of RichHF-18K's Pick-a-Pic images named by filename",
                   "pickapic_images": "a folder of Pick-a-Pic images named by filename",
                   "rlhfv_release": "the RLHF-V release (parquet file or folder)",
                   "human_task": "an annotation task JSON", "human_store": "an annotation store (SQLite)"}
#: hub repositories (and a file in them) that a registered real reward downloads.
REWARD_REPOS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "PickScore_v1": (("yuvalkirstain/PickScore_v1", None), ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", None)),
    "HPSv2.1": (("xswu/HPSv2", "HPS_v2.1_compressed.pt"),),
    "HPSv2": (("xswu/HPSv2", "HPS_v2_compressed.pt"),),
    "blip2-itm": (("Salesforce/blip2-itm-vit-g", None),),
    "ImageReward-v1.0": (("THUDM/ImageReward", "ImageReward.pt"),),
}
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Problem:
    """One thing a profile needs that is not there."""

    notebook: str
    parameter: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.notebook} · {self.parameter} = {self.value!r}" if self.parameter else self.notebook
        return f"{where}: {self.message}"


# ------------------------------------------------------------------ the hub


@lru_cache(maxsize=None)
def hub_status(repo_id: str, filename: str | None = None) -> str | None:
    """None when ``repo_id`` (and ``filename`` in it) is in the local Hugging Face cache or the hub answers for it;
    else why not. Offline (``HF_HUB_OFFLINE=1``) the hub is not asked."""
    import huggingface_hub as hf

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it once, at import
    try:
        if filename is None:
            hf.snapshot_download(repo_id, local_files_only=True, cache_dir=cache_dir)
        elif not isinstance(hf.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir), str):
            raise FileNotFoundError(filename)
        return None
    except Exception:  # noqa: BLE001 - any miss means: not cached
        pass
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return f"not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set"
    try:
        hf.HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S, files_metadata=False)
        return None
    except Exception as exc:  # noqa: BLE001 - whatever the network raised
        return (f"not in the local Hugging Face cache ({cache}) and the hub did not answer "
                f"({type(exc).__name__}: {str(exc)[:160]}); download it where there is network, or pass a local copy")


# ------------------------------------------------------------------ models and paths


def model_status(kind: str, name: Any, base_dir: Path = Path(".")) -> str | None:
    """None when the model ``name`` of ``kind`` (generator, clip, captioner, reward) resolves; else why not."""
    from feedbacklab.models.registry import SHIPPED, models_dir

    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        return f"expected a model name, hub id or directory (a string), got {name!r}"
    if kind == "reward":
        return reward_status(name, base_dir)
    if SHIPPED.get(name) == kind:
        return None if (models_dir() / name).is_dir() else f"shipped {kind} {name!r} is missing from {models_dir()}"
    local = Path(name) if Path(name).is_absolute() else base_dir / name
    if local.is_dir():
        return None
    if kind == "clip":
        return clip_status(name)
    if name.count("/") != 1 or name.startswith((".", "/")):
        shipped = sorted(n for n, k in SHIPPED.items() if k == kind)
        return f"not a shipped {kind} ({', '.join(shipped)}), not a directory, and not a hub id 'org/name'"
    return hub_status(name)


def clip_status(name: str) -> str | None:
    """OpenCLIP names: ``hf-hub:org/repo``, or ``ARCH/TAG`` among ``open_clip.list_pretrained()`` (its hub repo)."""
    import open_clip

    if name.startswith("hf-hub:"):
        return hub_status(name[len("hf-hub:"):])
    if name.count("/") != 1:
        return "an OpenCLIP model is 'ARCH/TAG' (e.g. 'ViT-L-14/openai'), 'hf-hub:org/repo', or a directory"
    arch, tag = name.split("/")
    if (arch, tag) not in set(open_clip.list_pretrained()):
        archs = sorted({a for a, _ in open_clip.list_pretrained()})
        if arch not in archs:
            return f"unknown OpenCLIP architecture {arch!r}; known: {', '.join(archs[:12])}, …"
        tags = sorted(t for a, t in open_clip.list_pretrained() if a == arch)
        return f"OpenCLIP {arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags)}"
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo = cfg.get("hf_hub", "").strip("/")
    if not repo:
        return None if cfg.get("url") else f"OpenCLIP {name} names no download location"
    why = hub_status(repo) if "/" in repo else None
    return f"its weights, hub repository {repo}: {why}" if why else None


def reward_status(name: str, base_dir: Path = Path(".")) -> str | None:
    """A registered reward (its hub repositories for the real ones), or a saved reward directory."""
    from feedbacklab.rewards import list_rewards
    from feedbacklab.rewards.registry import CONFIG_FILE

    local = Path(name) if Path(name).is_absolute() else base_dir / name
    if (local / CONFIG_FILE).is_file():
        return None
    if name not in list_rewards():
        return f"not a registered reward ({', '.join(list_rewards())}) nor a directory with {CONFIG_FILE}"
    if name == "ImageReward-v1.0":
        import importlib.util

        if importlib.util.find_spec("ImageReward") is None:
            return "needs the optional package image-reward (pip install image-reward)"
    misses = [f"{repo}{'/' + f if f else ''}: {why}" for repo, f in REWARD_REPOS.get(name, ())
              if (why := hub_status(repo, f))]
    return "; ".join(misses) or None


def path_status(parameter: str, value: Any, base_dir: Path = Path(".")) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        return f"expected a path (string), got {type(value).__name__}"
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    return None if path.exists() else f"{path.resolve()} does not exist ({PATH_PARAMETERS[parameter]})"


# ------------------------------------------------------------------ a profile


def literal_default(declared: dict[str, Any]) -> tuple[bool, Any]:
    """(True, value) for a notebook parameter whose default is a Python literal; (False, None) for an expression."""
    default = declared.get("default")
    try:
        return True, ast.literal_eval(default) if isinstance(default, str) else default
    except (ValueError, SyntaxError):
        return False, None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_jobs(jobs: Iterable[Any], declared: dict[str, dict[str, dict[str, Any]]], requires: dict[str, Any] | None = None,
               reports_dir: Path = Path("reports"), cuda_available: Callable[[], bool] | None = None) -> list[Problem]:
    """Every problem of the planned ``jobs`` (runner ``Job``: name, notebook, parameters); ``declared`` maps each
    job's name to its notebook's declared parameters (``runner.declared_parameters``)."""
    tasks: list[tuple[str, str, Any, Callable[[], str | None]]] = []
    wants_cuda = []
    for job in jobs:
        base = Path(job.notebook).parent
        values = {}
        for p, d in declared[job.name].items():
            known, value = (True, job.parameters[p]) if p in job.parameters else literal_default(d)
            if known:
                values[p] = value
        for p, value in values.items():
            if p in MODEL_PARAMETERS:
                for v in _as_list(value):
                    tasks.append((job.name, p, v, lambda k=MODEL_PARAMETERS[p], v=v, b=base: model_status(k, v, b)))
            elif p in PATH_PARAMETERS:
                tasks.append((job.name, p, value, lambda p=p, v=value, b=base: path_status(p, v, b)))
        if str(values.get("device", "")).startswith("cuda"):
            wants_cuda.append(job.name)
    with ThreadPoolExecutor(max_workers=8) as pool:  # hub questions wait on the network: ask them together
        answers = list(pool.map(lambda t: t[3](), tasks))
    problems = [Problem(n, p, v, why) for (n, p, v, _), why in zip(tasks, answers) if why]
    if wants_cuda:
        import torch

        if not (cuda_available or torch.cuda.is_available)():
            problems.append(Problem(", ".join(wants_cuda), "device", "cuda",
                                    "the profile asks for a CUDA GPU and torch sees none "
                                    f"(torch {torch.__version__}; a CPU build, or no driver)"))
    disk_gb = (requires or {}).get("disk_gb")
    if disk_gb:
        where = Path(reports_dir).resolve()
        while not where.exists():
            where = where.parent
        free = shutil.disk_usage(where).free / 2**30
        if free < float(disk_gb):
            problems.append(Problem("(profile)", "requires.disk_gb", disk_gb,
                                    f"{free:.1f} GiB free under {where}, the profile needs {disk_gb} GiB"))
    return problems


def check_profile(profile: str, notebooks_dir: Path | None = None, reports_dir: Path | None = None,
                  profiles_dir: Path | None = None) -> list[Problem]:
    """Plan ``profile`` (its structure errors raise ``runner.ConfigError``) and return every unresolved need."""
    from feedbacklab import runner
    from feedbacklab.notebook import NOTEBOOKS_DIR, REPORTS_DIR

    notebooks_dir = Path(notebooks_dir or NOTEBOOKS_DIR)
    reports_dir = Path(reports_dir or REPORTS_DIR)
    prof = runner.load_profile(profile, Path(profiles_dir or notebooks_dir / "profiles"))
    jobs = runner.plan(prof, notebooks_dir, reports_dir)
    declared = {j.name: runner.declared_parameters(j.notebook) for j in jobs}
    return check_jobs(jobs, declared, prof.requires, reports_dir / prof.name)


def format_problems(profile: str, problems: list[Problem]) -> str:
    if not problems:
        return f"profile {profile!r}: every model, dataset path, GPU and disk need resolves"
    return (f"profile {profile!r} cannot run: {len(problems)} problem(s)\n  - "
            + "\n  - ".join(str(p) for p in problems))
