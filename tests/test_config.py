"""Configuration files: defaults, and a clear one-line error for every mistake."""

from __future__ import annotations

import pytest

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
    ("[pe]\nmul_stages = -1\n", r"mul_stages must be an integer in 0..3"),
    ("[fpga]\nseed = -1\n", ">= 0"),
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
