"""README.md stays true: its config reference matches the schemas, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import config_reference  # noqa: E402


def test_config_reference_in_readme_matches_the_schemas() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_reference.readme_block(readme) == config_reference.reference(), (
        "README's config reference is stale: run `.venv/bin/python scripts/config_reference.py --write`"
    )


def test_readme_top_commands_are_make_targets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    targets = re.findall(r"^make (\w[\w-]*)", first_block, flags=re.M)
    assert targets == ["demo", "test"]
    dry_run = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stderr


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_config_named_in_readme_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in set(re.findall(r"configs/[\w/]+\.yaml", readme)):
        assert (ROOT / path).is_file(), path
