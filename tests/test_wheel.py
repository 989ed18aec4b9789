"""memspec works from an installed wheel, outside the source tree (grammar and std inside)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_installed_wheel_compiles_a_spec(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = dist.glob("memspec-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "specs" / "cs336_lm.mspec", work / "model.mspec")
    # The wheel's directory comes first on the path; lark, sympy and jinja2 come from
    # this environment. Nothing of the source tree is reachable from `work`.
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True,
                              text=True, check=False)

    where = run("-c", "import memspec; print(memspec.__file__)").stdout
    assert where.startswith(str(target))
    proc = run("-m", "memspec", "compile", "model.mspec", "--format", "json",
               "--preset", "gpt2_xl", "--set", "B=1")
    assert proc.returncode == 0, proc.stderr
    assert '"elements": 1635537600' in proc.stdout
    # the zoo ships too: a config.json's model_type picks its spec
    (work / "config.json").write_text(
        '{"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, '
        '"n_head": 12, "n_positions": 1024}',
        encoding="utf-8",
    )
    proc = run("-m", "memspec", "compile", "--hf-config", "config.json", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert '"elements": 124439808' in proc.stdout
