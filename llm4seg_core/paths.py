"""Where the product keeps its files: user data (model store, sessions) and the user cache.

``$LLM4SEG_HOME`` overrides the user data folder (tests, portable installs);
every path here is absolute and none is the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LLM4SEG_HOME"
DATASETS_ENV = "LLM4SEG_DATASETS"
APP_NAME = "llm4seg"


def data_root() -> Path:
    """``$LLM4SEG_HOME`` when set, else the platform's user data folder for llm4seg."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)).expanduser().resolve()


def store_root() -> Path:
    """The versioned model store: ``<data root>/models``."""
    return data_root() / "models"


def sessions_root() -> Path:
    """Autosaved corrections, one folder per image: ``<data root>/sessions``."""
    return data_root() / "sessions"


def cache_root() -> Path:
    """Rebuildable files (demo data, exported graphs): the platform's user cache folder."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME)).expanduser().resolve()


def staging_root() -> Path:
    """Temp files of results being written into a user's folder: ``<data root>/staging``.

    :func:`llm4seg_core.atomic.atomic_write` (``staged=True``) writes there and
    renames into place, so a killed write leaves nothing in the user's folder.
    """
    return data_root() / "staging"


def shipped_models_dirs() -> list[Path]:
    """Where the models shipped with the package are, in the order searched.

    A source checkout or an editable install has them in ``resources/models``
    beside the package; a wheel puts them in ``<prefix>/share/llm4seg/models``
    (pyproject's data-files).
    """
    import sys

    return [Path(__file__).resolve().parent.parent / "resources" / "models",
            Path(sys.prefix) / "share" / "llm4seg" / "models"]


def datasets_root() -> Path | None:
    """Labelled dataset folders for demos and benchmarks, if this machine has them.

    ``$LLM4SEG_DATASETS`` when set, else ``shared/data`` beside a source
    checkout (the development machines); None when neither exists. Users get
    trained models, never this data.
    """
    env = os.environ.get(DATASETS_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return here if here.is_dir() else None
