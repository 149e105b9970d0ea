"""The import direction between the top-level packages (README "Layout"): `models/` is the
bottom, `service/` builds on it, and the process packages (`api`, `actors`, `scheduler`) and the
`astronote` command build on `service/`. Read with the ast module, so an import inside a
function, under `TYPE_CHECKING` or a relative one counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_PACKAGES = {"api", "actors", "scheduler", "astronote"}
# package -> the top-level packages it must never import
FORBIDDEN = {
    "service": PROCESS_PACKAGES,
    "models": PROCESS_PACKAGES | {"service"},
}


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in the file at `path`, inside `package`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the file's own top-level package
                found.add((package, node.lineno))
            elif node.module:
                found.add((node.module.split(".")[0], node.lineno))
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_package_never_imports_a_higher_one(package):
    files = sources(package)
    assert len(files) > 3, f"no sources found under {ROOT / package}"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for name, line in sorted(imported_packages(path, package))
        if name in FORBIDDEN[package]
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_imports_wherever_they_are(tmp_path):
    # (the control: a function-level, a TYPE_CHECKING and a dotted import are all found)
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from api.app import create_app\n"
        "def later():\n"
        "    import scheduler.jobs\n"
        "    from . import sibling\n"
    )
    names = {name for name, _ in imported_packages(source, "service")}
    assert {"api", "scheduler", "service", "typing"} <= names


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Layout")
    return readme[start : readme.index("\n## ", start + 1)]


@pytest.mark.parametrize("folder", ["service", "service/infra", "service/observability"])
def test_the_readme_layout_names_every_module_of_service(folder):
    # Each module is named in backticks on its package's line(s) of the Layout section
    section = layout_section()
    lines = section.split("\n- ") if folder == "service" else section.split("\n  - ")
    entry = next(line for line in lines if line.lstrip("- ").startswith(f"`{folder}/`"))
    if folder == "service":
        entry = entry.split("\n  - ")[0]  # the subpackages have their own lines
    modules = sorted(path.stem for path in (ROOT / folder).glob("*.py") if path.stem != "__init__")
    assert modules, folder
    missing = [name for name in modules if f"`{name}`" not in entry]
    assert missing == [], f"README Layout does not name {missing} under {folder}/"
