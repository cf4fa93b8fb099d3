"""Packaging: every package reaches the wheel, the base install works without extras, the import is lazy."""

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
#: The optional extras' packages (pyproject.toml [project.optional-dependencies]), blocked below.
OPTIONAL = ("torch", "safetensors", "matplotlib", "datasets", "huggingface_hub", "pythia8mc", "dask", "distributed")


def test_every_package_folder_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {v: k for k, v in config["package-dir"].items()}  # folder -> import name (cli -> fm4npp_cli)
    found = set()
    for top in ("fm4npp_data", "fm4npp_models", "cli"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            found.add(".".join([folders.get(parts[0], parts[0]), *parts[1:]]))
    assert found == listed


def test_the_base_install_converts_prepares_and_inspects_without_any_extra(sim_svtx, tmp_path, python_without):
    code = f"""
        from pathlib import Path
        from click.testing import CliRunner
        from fm4npp_cli.data import main
        import fm4npp_data

        out = Path({str(tmp_path / "events")!r})
        summary = fm4npp_data.convert([Path({str(sim_svtx)!r})], out)
        assert summary.errors == [], summary.errors
        prepared = fm4npp_data.prepare(out, fm4npp_data.PrepareOptions(k=3, sample_events=50))
        assert prepared.errors == [] and prepared.events == 240, prepared.errors
        assert fm4npp_data.describe(out).sections["content"]["prepared"]["k"] == 3
        assert fm4npp_data.read_events(out, columns=["knn"]).num_rows == 240
        result = CliRunner().invoke(main, ["inspect", str(out)])
        assert result.exit_code == 0, result.output
        simulate = CliRunner().invoke(main, ["simulate", "--events", "1", "--out", str(out.parent / "sim")])
        assert simulate.exit_code == 2 and "pip install 'fm4npp[sim]'" in simulate.output, simulate.output
        display = CliRunner().invoke(main, ["display", str(out), "--out", str(out.parent / "e.png")])
        assert display.exit_code == 2 and "pip install 'fm4npp[plot]'" in display.output, display.output
        import sys
        assert not [m for m in {OPTIONAL!r} if m in sys.modules]
        print("ok")
    """
    result = python_without(OPTIONAL, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_import_fm4npp_data_is_lazy(python_without):
    code = """
        import sys
        import fm4npp_data
        heavy = [m for m in ("pyarrow", "numba", "uproot", "awkward") if m in sys.modules]
        assert heavy == [], heavy
        assert callable(fm4npp_data.read_events) and "pyarrow" in sys.modules
        assert fm4npp_data.__version__
        print("ok")
    """
    result = python_without(OPTIONAL, code)
    assert result.returncode == 0, result.stderr


def test_the_model_commands_show_their_defaults_without_torch(python_without):
    """The model commands read their defaults from fm4npp_models.training.options, which needs no torch."""
    code = """
        import sys
        from click.testing import CliRunner
        from fm4npp_cli.main import main
        from fm4npp_models.training.options import FinetuneOptions, PredictOptions, PretrainOptions

        for command, options in (("pretrain", PretrainOptions()), ("finetune", FinetuneOptions()),
                                 ("predict", PredictOptions())):
            result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
            assert result.exit_code == 0, result.output
            assert f"[default: {options.batch_tokens}; x>=1]" in result.output, result.output
        assert "torch" not in sys.modules
        print("ok")
    """
    result = python_without(OPTIONAL, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
