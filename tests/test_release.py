"""The package as a user installs it: the optimizer library without the harness's packages, the command's help
without its extras, install hints that fit the install, the wrapper's class form, the version defined once, and the
files the commands read shipped in the package (the built wheel itself is checked by tools/release_check.sh)."""

import importlib.metadata
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

import gradpower
from gradpower import GradPower, power_class

from .helpers import TinyNet, batches, loss_of


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_a_power_controller_steps_and_predicts_without_scipy():
    done = run_python("""
        import sys
        sys.modules["scipy"] = None  # importing scipy (or any of its modules) now fails
        import torch, gradpower
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        controller = gradpower.PowerController(every=3)
        opt = gradpower.AdamPower(model.parameters(), lr=1e-3, p=controller)
        x, y = torch.randn(32, 8), torch.randn(32, 4)
        for _ in range(6):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        update = controller.take_update()
        assert update is not None and 0.5 <= update["p_track"] <= 2.0, update
        assert "scipy" not in {name.split(".")[0] for name, m in sys.modules.items() if m is not None}
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_version_and_every_help_work_without_the_train_extra():
    done = run_python("""
        import sys
        for name in ("tokenizers", "datasets", "matplotlib", "scipy", "tqdm", "safetensors", "pyarrow"):
            sys.modules[name] = None
        from gradpower.cli import COMMANDS, main
        for argv in (["--version"], ["--help"], *([name, "--help"] for name in COMMANDS)):
            try:
                main(argv)
            except SystemExit as exc:
                assert not exc.code, (argv, exc.code)
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    assert "gradpower " + gradpower.__version__ in done.stdout


def test_a_missing_extra_is_named_with_the_install_that_fits():
    from gradpower import extras

    message = extras.missing_extra_message("the training harness", "tokenizers")
    assert message.endswith(f"pip install -e '{extras.source_root()}[train]'")  # this clone: its folder
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extras, "source_root", lambda: None)  # an installed distribution
        assert extras.missing_extra_message("the training harness", "tokenizers").endswith(
            "pip install 'gradpower[train]'")


def test_the_installed_metadata_has_the_packages_version():
    assert importlib.metadata.version("gradpower") == gradpower.__version__


def train_twice(make_opt, steps: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    opt = make_opt(model)
    for batch in batches(steps):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    return model


@pytest.mark.parametrize("base, kwargs", [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                          (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1})])
def test_the_class_form_and_power_class_are_the_instance_form_to_the_bit(base, kwargs):
    instance = train_twice(lambda m: GradPower(base(m.parameters(), **kwargs), p=1.3))
    by_class = train_twice(lambda m: GradPower(base, m.parameters(), p=1.3, **kwargs))
    by_keyword = train_twice(lambda m: GradPower(base, params=m.parameters(), p=1.3, **kwargs))
    factory = power_class(base)
    made = train_twice(lambda m: factory(m.parameters(), p=1.3, **kwargs))  # as HF Trainer calls optimizer_cls
    for model in (by_class, by_keyword, made):
        for (name, a), (_, b) in zip(instance.named_parameters(), model.named_parameters()):
            assert torch.equal(a, b), name
    assert factory.__name__ == f"{base.__name__}Power" and issubclass(factory, GradPower)


def test_the_wrapper_refuses_what_it_cannot_build_in_one_line():
    model = TinyNet()
    with pytest.raises(TypeError, match="takes only p"):
        GradPower(torch.optim.SGD(model.parameters(), lr=0.1), 1.2)
    with pytest.raises(TypeError, match="apply phi_p twice"):
        GradPower(power_class(torch.optim.SGD), model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="Optimizer subclass"):
        power_class(dict)


def test_the_files_the_commands_read_ship_in_the_package(tmp_path, monkeypatch):
    from gradpower.experiments.claims import CLAIMS_FILE, load_claims
    from gradpower.train.config import SHIPPED_CONFIGS, load_toml

    assert CLAIMS_FILE.is_relative_to(gradpower.__path__[0])
    assert load_claims()[0]  # the shipped claims file parses
    monkeypatch.chdir(tmp_path)  # outside the clone: the docs' spelling finds the shipped config
    for spelling in ("configs/tiny-shakespeare.toml", "tiny-shakespeare.toml", "tiny-shakespeare"):
        assert load_toml(spelling) == load_toml(SHIPPED_CONFIGS / "tiny-shakespeare.toml")
    with pytest.raises(ValueError, match="shipped configs, by name: .*tiny-shakespeare"):
        load_toml("configs/no-such.toml")


def test_the_first_build_of_the_cpp_kernel_says_so_once_through_the_librarys_logger(monkeypatch, caplog):
    from gradpower.optim import onepass_cpu, routes

    monkeypatch.setattr(routes, "_state", {})
    monkeypatch.setattr(onepass_cpu, "is_built", lambda **kw: False)
    monkeypatch.setattr(onepass_cpu, "build", lambda **kw: "ops")
    with caplog.at_level(logging.INFO, logger="gradpower"):
        assert routes.cpp_ops() == "ops" and routes.cpp_ops() == "ops"
    lines = [r for r in caplog.records if "C++ CPU kernel" in r.getMessage()]
    assert len(lines) == 1 and lines[0].name.startswith("gradpower.")
    assert "once per machine and torch version" in lines[0].getMessage()
    assert str(onepass_cpu.build_folder()) in lines[0].getMessage()
    monkeypatch.setattr(routes, "_state", {})
    monkeypatch.setattr(onepass_cpu, "is_built", lambda **kw: True)  # in torch's cache: nothing to say
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gradpower"):
        routes.cpp_ops()
    assert not [r for r in caplog.records if "C++ CPU kernel" in r.getMessage()]
