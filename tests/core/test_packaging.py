"""pyproject.toml lists every package folder, so a non-editable install is whole."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package_folder():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for name, folder in conf["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join((name, *rel.parts)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; " \
                            f"listed but absent: {sorted(listed - found)}"


def test_wheels_carry_every_shipped_model_and_its_card():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(conf["data-files"]["share/llm4seg/models"])
    for weights in sorted((ROOT / "resources" / "models").glob("*.safetensors")):
        for f in (weights, weights.with_suffix(".md")):
            assert f.is_file(), f"{f.name}: every shipped model needs its model card"
            assert f"resources/models/{f.name}" in shipped, f"{f.name} is missing from data-files"
