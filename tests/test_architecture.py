"""The layering docs/architecture.md describes, checked on the source: the config layer imports no registry,
no library module imports the command line, and no private name crosses a package; and the command line
imports none of the heavy libraries before it has checked its arguments."""

import ast
import os
import subprocess
import sys

from conftest import REPO

DA = REPO / "da"


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_config_layer_imports_only_the_settings_table_and_the_file_loader():
    for layer in ("config.py", "settings.py"):
        used = {m for m, _ in _imports(DA / layer) if m == "da" or m.startswith("da.")}
        assert used <= {"da", "da.settings", "da.utils.safeload"}, (layer, used)
    assert not {m for m, names in _imports(DA / "config.py") if m == "da" and set(names) - {"settings"}}


def test_no_library_module_imports_the_command_line():
    for path in DA.rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("da/scripts/") or rel == "da/cli.py":
            continue
        for module, _ in _imports(path):
            assert not (module == "da.cli" or module.startswith("da.scripts")), (rel, module)


def test_no_private_name_is_imported_from_another_package():
    for path in DA.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
        here = _package(rel.removesuffix(".__init__"))
        for module, names in _imports(path):
            if not module.startswith("da."):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private or _package(module) == here, (rel, module, private)


HEAVY = ("sklearn", "torchvision", "timm", "pandas", "scipy")


def test_the_command_line_checks_its_arguments_without_the_heavy_libraries():
    """`da-run --help` and a bad flag answer in about a second: importing da.cli and the run program loads
    none of sklearn, torchvision, timm, pandas, scipy (imported where they are used); da.data's transforms
    still resolve on first use."""
    code = ("import sys, da.cli, da.scripts.run; "
            f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules))); "
            "import da.data; assert callable(da.data.eval_transform) and 'torchvision' in sys.modules")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [], f"imported with da.cli: {res.stdout.strip()}"


def test_a_signal_ends_every_training_program_the_same_way():
    """run, detect and hpo's worker exit on Slurm's signals through one handler (da.utils.interrupt)."""
    import signal

    from da.utils.interrupt import Interrupted, exit_on_signals

    import pytest

    scripts = REPO / "da" / "scripts"
    for name in ("run.py", "detect.py", "hpo.py"):
        text = (scripts / name).read_text()
        assert "exit_on_signals(" in text and "class Interrupted" not in text, name
    before = signal.getsignal(signal.SIGUSR2)
    try:
        exit_on_signals("do this next", (signal.SIGUSR2,))
        with pytest.raises(Interrupted, match="stopped by signal SIGUSR2; do this next"):
            os.kill(os.getpid(), signal.SIGUSR2)  # the handler runs before the next bytecode
    finally:
        signal.signal(signal.SIGUSR2, before)
