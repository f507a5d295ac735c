"""Configuration files: defaults, and a clear one-line error for every mistake."""

from __future__ import annotations

import pytest

from hw import never_built
from speqmoe.cli import main
from speqmoe.config import Config, load_config
from speqmoe.errors import UserError


def test_no_file_gives_the_defaults():
    assert load_config(None) == Config()


def test_values_are_read(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[sim]\nseed = 7\nsimulators = ["icarus"]\n[array]\nrows = 2\n')
    cfg = load_config(p)
    assert (cfg.sim.seed, cfg.sim.simulators, cfg.array.rows, cfg.array.cols) == (7, ("icarus",), 2, 4)


@pytest.mark.parametrize("text,match", [
    ("[simm]\nseed = 1\n", "unknown table"),
    ("[sim]\nsed = 1\n", "unknown key"),
    ("[sim]\nseed = true\n", "must be int"),
    ("[sim]\nseed = 1.5\n", "must be int"),
    ("[sim]\nsimulators = \"icarus\"\n", "list of strings"),
    ("[sim]\nsimulators = [\"modelsim\"]\n", "verilator and/or icarus"),
    ("[sim]\npe_sequences = 0\n", "at least 1"),
    ("[array]\nrows = 0\n", "at least 1"),
    ("[pe]\nadd_stages = 4\n", r"\[pe\]\.add_stages must be an integer in 0..3"),
    ("[pe]\nmul_stages = -1\n", r"mul_stages must be an integer in 0..4"),
    ("[fpga]\nseed = -1\n", ">= 0"),
    ("[cache]\nslots = 0\n", r"\[cache\]\.slots must be at least 1"),
    ("[accel]\npolicy = 3\n", r"\[accel\]\.policy must be str"),
    ("sim = 3\n", "must be a table"),
    ("[sim\n", "not valid TOML"),
])
def test_bad_configuration_is_a_user_error(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        load_config(p)


def test_missing_file_exits_2_with_one_line(tmp_path, capsys):
    assert main(["verilog", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_every_bench_and_demo_section_imports():
    # A section is only imported when its bench or demo runs; a syntax error must not wait.
    import importlib
    import pkgutil

    import speqmoe.benches
    import speqmoe.demos

    for package in (speqmoe.benches, speqmoe.demos):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            assert hasattr(module, "run"), f"{module.__name__} has no run()"


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_list_names_every_section_with_what_it_is(command, capsys):
    import pkgutil

    import speqmoe.benches
    import speqmoe.demos

    package = speqmoe.demos if command == "demo" else speqmoe.benches
    assert main([command, "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert sorted(names) == sorted(i.name for i in pkgutil.iter_modules(package.__path__))
    for line in lines:
        about = line.split(maxsplit=1)[1]
        assert len(about) > 10 and "section" not in about.lower(), line


def test_setup_rebuilds_a_venv_made_by_another_python(tmp_path):
    """``make setup``'s check (speqmoe/venv_check.py) on fake environments."""
    import subprocess
    import sys
    from pathlib import Path

    from speqmoe import venv_check

    assert venv_check.allowed("3.11.7", ">=3.11,<3.12")
    assert not venv_check.allowed("3.12.1", ">=3.11,<3.12")
    assert not venv_check.allowed("3.10.14", ">=3.11,<3.12")
    assert venv_check.allowed("3.11.7", venv_check.requires_python())

    def fake_venv(name: str, script: str):
        venv = tmp_path / name
        (venv / "bin").mkdir(parents=True)
        python = venv / "bin" / "python"
        python.write_text(f"#!/bin/sh\n{script}\n")
        python.chmod(0o755)
        return venv

    current = ".".join(str(p) for p in sys.version_info[:3])
    other = fake_venv("other", "echo 3.9.18")            # another interpreter
    broken = fake_venv("broken", "exit 127")             # interpreter gone
    same = fake_venv("same", f"echo {current}")
    assert "made by Python 3.9.18" in venv_check.stale_reason(other, current)
    assert "does not run" in venv_check.stale_reason(broken, current)
    assert venv_check.stale_reason(same, current) is None
    assert venv_check.stale_reason(tmp_path / "absent", current) is None

    run = subprocess.run([sys.executable, str(Path(venv_check.__file__)), str(other)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"setup uses Python {current}" in run.stdout
    assert "rebuilding" in run.stdout and not other.exists()
    run = subprocess.run([sys.executable, str(Path(venv_check.__file__)), str(same)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and same.exists() and "rebuilding" not in run.stdout


def test_an_unwritable_out_is_one_line_and_a_failure(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status = main(["verilog", "--designs", "fp16_pe", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and "Not a directory" in err[0] and str(blocker) in err[0], err


def test_json_means_the_same_in_every_command():
    """Where a command has --json, it is a flag: one JSON object on stdout instead of the
    text, progress on stderr."""
    from speqmoe.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    with_json = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if "--json" in action.option_strings:
                with_json.append(name)
                assert action.nargs == 0, f"{name} --json takes a value"
                assert "one JSON object instead of" in action.help, (name, action.help)
                assert "progress goes to stderr" in action.help, (name, action.help)
    assert {"cosim", "fpga", "mobile", "speq", "spec-mobile"} <= set(with_json)


def test_verilog_list_describes_every_design_in_one_line(capsys):
    from speqmoe import designs

    assert main(["verilog", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(designs.DESIGNS)
    for line in lines:
        assert len(line.split(maxsplit=1)[1]) > 20, line


@pytest.mark.parametrize("text,design,match", [
    ("[cache]\nslots = 65\n", "expert_cache", r"error: \[cache\]: slots must be at most 64, not 65$"),
    ("[cache]\nexpert_bytes = 100\n", "expert_cache", r"\[cache\]: expert_bytes \(100\) must be a multiple"),
    ("[accel]\nrows = 3\n", "accel", r"\[accel\]: rows \* cols must be a power of two"),
    ("[accel]\npolicy = \"mru\"\n", "accel", r"\[accel\]: policy must be one of"),
    ("[accel]\nadd_stages = 2\n", "accel", r"\[accel\]\.add_stages must be 0, 1 or 3"),
])
def test_a_value_the_hardware_rejects_is_one_line_naming_the_table(tmp_path, monkeypatch, capsys,
                                                                   text, design, match):
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text)
    assert main(["verilog", "--config", "c.toml", "--designs", design, "--out", "v"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err


def test_cache_and_accel_tables_size_their_designs(tmp_path):
    from speqmoe import designs

    p = tmp_path / "c.toml"
    p.write_text('[cache]\nslots = 8\nexpert_bytes = 1280\ndata_width = 128\npolicy = "lfu"\n'
                 '[accel]\nrows = 2\ncols = 2\nslots = 4\nexpert_bytes = 512\nk_max = 64\n')
    cfg = load_config(p)
    cache = designs.build("expert_cache", cfg)
    accel = designs.build("accel", cfg)
    for c in (cache, accel):
        never_built(c)  # only parameters are read, never elaborated
    assert (cache.slots, cache.data_width, cache.policy) == (8, 128, "lfu")
    assert (accel.pes, accel.slots, accel.expert_bytes, accel.k_max) == (4, 4, 512, 64)
    assert "8 slots of 1,280 bytes" in designs.describe("expert_cache", cfg)
