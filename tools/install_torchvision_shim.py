"""Install tools/torchvision_shim.py into this interpreter's site-packages if needed.

Idempotent. Does nothing when torchvision is absent or imports cleanly (a normal
CUDA or CPU install); installs the shim only on the known failure
``operator torchvision::nms does not exist`` and then checks that open_clip imports.
"""
import pathlib
import shutil
import subprocess
import sys
import sysconfig

MODULE = "_feedbacklab_torchvision_shim"
SITE = pathlib.Path(sysconfig.get_paths()["purelib"])
HERE = pathlib.Path(__file__).resolve().parent


def _try(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def main() -> int:
    installed = (SITE / f"{MODULE}.pth").exists()
    if not installed:
        probe = _try("import torchvision")
        if probe.returncode == 0 or "No module named 'torchvision'" in probe.stderr:
            print("torchvision shim: not needed")
            return 0
        if "torchvision::nms does not exist" not in probe.stderr:
            print(probe.stderr, file=sys.stderr)
            print("torchvision fails to import for an unknown reason; not patching", file=sys.stderr)
            return 1
        shutil.copy(HERE / "torchvision_shim.py", SITE / f"{MODULE}.py")
        (SITE / f"{MODULE}.pth").write_text(f"import {MODULE}\n")
        print(f"torchvision shim: installed into {SITE}")
    check = _try("import open_clip, torchvision.transforms")
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        print("open_clip still fails to import with the torchvision shim", file=sys.stderr)
        return 1
    print("torchvision shim: open_clip imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
