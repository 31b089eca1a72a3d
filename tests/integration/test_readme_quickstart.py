"""The README's quickstart block runs as printed (in a temporary folder, with examples/ on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_quickstart_runs(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("```python\n", readme.index("## Quickstart")) + len("```python\n")
    code = readme[start : readme.index("```\n", start)]
    assert "BestCheckpointCallback" in code
    script = tmp_path / "quickstart.py"
    script.write_text(code.replace('sys.path.insert(0, "examples")', f"sys.path.insert(0, {str(REPO / 'examples')!r})"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "outputs/quickstart/checkpoint-" in done.stdout
    assert "# Checkpoint leaderboard" in done.stdout
    assert (tmp_path / "outputs" / "quickstart" / "checkpoint_leaderboard.json").is_file()
