"""The caches across processes: parsed modules and compile outputs, never stale or trusted
blindly (a changed file, a corrupt entry or an unwritable folder is a recompile)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

import memspec.cli as cli
from memspec import compile_cache
from memspec.cli import main
from memspec.compile import COMPILE_SECONDS
from memspec.policies import IMPLEMENTATIONS
from memspec.source import SourceFile
from memspec.sweep.grid import MAX_POINTS
from memspec.syntax import cache
from memspec.syntax.parse import _parse_text

from .conftest import ROOT, SPECS

TEXT = "dim batch_size as B\ndim d_model as D\nlet two = 2\n"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSPEC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting():
    calls = []

    def parse(text, source):
        calls.append(text)
        return _parse_text(text, source)

    return parse, calls


def test_a_parsed_module_is_kept_by_its_text(folder):
    parse, calls = _counting()
    source = SourceFile("m.mspec", TEXT)
    first = cache.cached_module(TEXT, source, parse)
    again = cache.cached_module(TEXT, source, parse)
    assert again == first and len(calls) == 1  # the second from the file
    assert len(list((folder / "parsed").glob("*.module"))) == 1
    other = TEXT.replace("two = 2", "two = 2 ")
    cache.cached_module(other, SourceFile("m.mspec", other), parse)
    renamed = SourceFile("n.mspec", TEXT)  # spans name their file: another key
    assert cache.cached_module(TEXT, renamed, parse).decls[0].span.source == renamed
    assert len(calls) == 3


def test_a_large_file_is_parsed_each_time(folder):
    parse, calls = _counting()
    lines = TEXT + "".join(f"let c{k} = {k}\n" for k in range(cache.MAX_CACHED_CHARS // 10))
    assert len(lines) > cache.MAX_CACHED_CHARS
    source = SourceFile("big.mspec", lines)
    assert cache.cached_module(lines, source, parse) == cache.cached_module(lines, source, parse)
    assert len(calls) == 2 and not (folder / "parsed").exists()


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a pickle", pickle.dumps(["a list"]), pickle.dumps(42)[:-1]],
)
def test_a_corrupt_entry_is_parsed_again_and_rewritten(folder, damage):
    parse, calls = _counting()
    source = SourceFile("m.mspec", TEXT)
    good = cache.cached_module(TEXT, source, parse)
    (entry,) = (folder / "parsed").glob("*.module")
    entry.write_bytes(damage)
    assert cache.cached_module(TEXT, source, parse) == good and len(calls) == 2
    assert pickle.loads(entry.read_bytes()) == good


def test_an_entry_for_another_file_is_not_trusted(folder):
    parse, calls = _counting()
    source = SourceFile("m.mspec", TEXT)
    cache.cached_module(TEXT, source, parse)
    (entry,) = (folder / "parsed").glob("*.module")
    other = "dim num_layers as N\n"
    entry.write_bytes(pickle.dumps(_parse_text(other, SourceFile("m.mspec", other))))
    assert cache.cached_module(TEXT, source, parse).decls[0].name == "batch_size"
    assert len(calls) == 2


def test_an_unwritable_cache_is_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    monkeypatch.setenv("MEMSPEC_CACHE_DIR", str(blocker))
    parse, calls = _counting()
    source = SourceFile("m.mspec", TEXT)
    cache.cached_module(TEXT, source, parse)
    cache.cached_module(TEXT, source, parse)
    assert len(calls) == 2
    monkeypatch.setenv("MEMSPEC_CACHE_DIR", "")  # off
    assert cache.grammar_cache() is False


def _compile_counting(monkeypatch):
    calls = []
    real = cli._compile

    def counted(args):
        calls.append(args.spec)
        return real(args)

    monkeypatch.setattr(cli, "_compile", counted)
    return calls


def test_a_compile_is_answered_from_its_output_until_a_file_it_read_changes(
    folder, tmp_path, monkeypatch, capsys
):
    spec = tmp_path / "m.mspec"
    shutil.copy(SPECS / "cs336_lm.mspec", spec)
    calls = _compile_counting(monkeypatch)
    args = ["compile", str(spec), "--format", "json", "--preset", "gpt2_xl", "--set", "B=1"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0 and capsys.readouterr().out == first
    assert len(calls) == 1  # the second from the cache
    (entry,) = (folder / "outputs").glob("*.json")
    reads = json.loads(entry.read_text())["reads"]
    assert str(spec.resolve()) in [p for p, _ in reads]
    assert any(p.endswith("std/layers.mspec") for p, _ in reads)  # `use std`'s files
    assert main([*args, "--precision", "bf16"]) == 0  # other options: another entry
    assert len(calls) == 2
    capsys.readouterr()
    spec.write_text(spec.read_text().replace("gpt2_xl", "xl"))  # a file read changed
    assert main([*args[:5], "xl", *args[6:]]) == 0
    assert main(args) == 2  # the preset is gone: compiled again, an error
    assert "unknown preset 'gpt2_xl'" in capsys.readouterr().err
    assert len(calls) == 4


def test_a_corrupt_output_entry_is_compiled_again(folder, monkeypatch, capsys):
    calls = _compile_counting(monkeypatch)
    args = ["compile", str(SPECS / "mlp.mspec"), "--format", "json"]
    assert main(args) == 0
    first = capsys.readouterr().out
    (entry,) = (folder / "outputs").glob("*.json")
    for damage in ("", "{", json.dumps({"format": "other", "reads": [], "output": "x"})):
        entry.write_text(damage)
        assert main(args) == 0 and capsys.readouterr().out == first
    assert len(calls) == 4
    doc = json.loads(entry.read_text())
    doc["reads"] = [[p, "0" * 64] for p, _ in doc["reads"]]  # a hash that does not match
    entry.write_text(json.dumps(doc))
    assert main(args) == 0 and len(calls) == 5


def test_errors_are_not_kept(folder, tmp_path, capsys):
    spec = tmp_path / "bad.mspec"
    spec.write_text("dim batch_size as B\nmodel Nothing\n")
    assert main(["compile", str(spec)]) == 2
    capsys.readouterr()
    assert not (folder / "outputs").exists() or not list((folder / "outputs").glob("*.json"))
    assert compile_cache.lookup({"spec": str(spec)}) is None


def test_a_cached_answer_needs_no_sympy(folder):
    env = {**os.environ, "MEMSPEC_CACHE_DIR": str(folder)}
    args = [sys.executable, "-m", "memspec", "compile", "specs/mlp.mspec", "--format", "json"]
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    probe = (
        "import sys, runpy; sys.argv = " + repr(["memspec", *args[3:]]) + "\n"
        "try:\n    runpy.run_module('memspec', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('sympy' in sys.modules, file=sys.stderr)"
    )
    second = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert second.stdout == first.stdout
    assert second.stderr.strip() == "False"


def test_the_command_line_constants_equal_their_sources():
    assert tuple(IMPLEMENTATIONS) == cli.IMPLEMENTATIONS
    assert cli.MAX_POINTS == MAX_POINTS
    assert cli.COMPILE_SECONDS == COMPILE_SECONDS


def test_the_version_is_the_package_metadata():
    from memspec.version import __version__

    text = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{__version__}"\n' in text
