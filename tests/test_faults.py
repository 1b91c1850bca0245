"""Faults as a user meets them, through the command line: kills, full disks, concurrent runs, damaged files.

Each case ends in a one-line message that names the file and the remedy, and
loses no data. Disk-full cases run on a small tmpfs when the tests run as root
(where mounting is allowed) and on a simulated ENOSPC otherwise.
"""

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradpower.cli import main
from gradpower.experiments.runs import RunReadError, load_run
from gradpower.invocation import spelling
from gradpower.train.checkpoint import list_checkpoints, load_checkpoint, step_of

from .helpers import MICRO_EVAL_TOKENS

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A token cache built once, so subprocess runs do not race to build it."""
    folder = tmp_path_factory.mktemp("cache")
    assert main(["train", *micro_args(str(folder)), "--steps", "1", "--out", str(folder.parent / "warmup")]) == 0
    return str(folder)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """The first 300 kB of the bundled corpus: a fresh token cache builds in about a second."""
    from gradpower.data.corpus import shakespeare_text

    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(shakespeare_text()[:300_000])
    return str(path)


def micro_args(cache: str) -> list[str]:
    return ["--preset", "llama-tiny", "--batch-size", "2", "--seq-len", "16", "--bpe-vocab-size", "300",
            "--eval-batches", "1", "--cache-dir", cache, "--device", "cpu", "--log-every", "1",
            "--eval-tokens", str(MICRO_EVAL_TOKENS)]


#: How the hints spell ``python -m gradpower`` as these tests start it (:mod:`gradpower.invocation`).
PROGRAM = spelling("__main__.py")


def gradpower(*argv: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gradpower", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("gradpower: warning:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def losses(run_dir: Path) -> list[str]:
    """The loss and val_loss fields of metrics.jsonl as written (byte-for-byte comparable)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.append(f"{record['step']}:{json.dumps(record['loss'])}:{json.dumps(record.get('val_loss'))}")
    return out


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (the simulated-ENOSPC variant of this case still runs)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- data loss -----------------------------------------------------------------------------------------

def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path, cache, capsys):
    out = tmp_path / "run"
    first = gradpower("train", *micro_args(cache), "--steps", "100000", "--out", str(out))
    try:
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert main(["train", *micro_args(cache), "--steps", "10", "--out", str(out), "--resume"]) == 4
        line = one_line(capsys.readouterr().err)
        assert f"{out} is in use by another gradpower run (pid {first.pid})" in line
        assert main(["train", *micro_args(cache), "--steps", "10", "--out", str(out), "--overwrite"]) == 4
        assert "in use by another gradpower run" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
    # The holder died: its lock is gone with it, and the folder can be resumed or overwritten.
    assert main(["train", *micro_args(cache), "--steps", "3", "--out", str(out), "--overwrite"]) == 0


def test_out_folders_that_are_not_ours_or_hold_a_run_are_refused(tmp_path, cache, capsys):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "config.json").write_text('{"my": "settings"}')
    assert main(["train", *micro_args(cache), "--steps", "2", "--out", str(mine)]) == 4
    assert "is not empty and holds no gradpower run" in one_line(capsys.readouterr().err)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    assert main(["train", *micro_args(cache), "--steps", "2", "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "precious"  # --overwrite deletes only the run's own files
    assert main(["train", *micro_args(cache), "--steps", "2", "--out", str(mine)]) == 4
    assert "already holds a run: pass --resume" in one_line(capsys.readouterr().err)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["train", *micro_args(cache), "--steps", "2", "--out", str(a_file)]) == 4
    assert "is an existing file, not a folder" in one_line(capsys.readouterr().err)


def test_huge_lr_never_writes_a_poisoned_checkpoint(tmp_path, cache, capsys):
    out = tmp_path / "run"
    argv = ["train", *micro_args(cache), "--steps", "5", "--out", str(out), "--lr", "1e39", "--schedule", "constant",
            "--warmup", "0", "--ckpt-every", "1"]
    assert main(argv) == 3
    line = one_line(capsys.readouterr().err)
    assert "parameters are not finite after step 1" in line and "Last good checkpoint: none written yet" in line
    assert list_checkpoints(out / "checkpoints") == []


def test_a_torn_metrics_line_is_dropped_on_resume_and_losses_stay_identical(tmp_path, cache, capsys):
    straight = tmp_path / "straight"
    assert main(["train", *micro_args(cache), "--steps", "8", "--out", str(straight)]) == 0
    cut = tmp_path / "cut"
    assert main(["train", *micro_args(cache), "--steps", "8", "--out", str(cut), "--ckpt-every", "2",
                 "--stop-after", "5"]) == 0
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "tokens": 192, "loss": 4.3')  # what a kill -9 mid-write leaves
    capsys.readouterr()
    assert main(["train", *micro_args(cache), "--steps", "8", "--out", str(cut), "--resume"]) == 0
    assert "dropped a torn last line" in capsys.readouterr().err
    assert losses(cut) == losses(straight)


# -- full disk, read-only places ------------------------------------------------------------------------

def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, cache, capsys):
    with tmpfs(tmp_path / "small", "40m") as disk:  # one 25 MB checkpoint fits, two do not
        out = disk / "run"
        argv = ["train", *micro_args(cache), "--steps", "8", "--out", str(out), "--ckpt-every", "2",
                "--keep-ckpts", "3"]
        assert main(argv) == 4
        line = one_line(capsys.readouterr().err)
        saved = list_checkpoints(out / "checkpoints")
        assert saved, line
        assert f"no space left on {disk} while writing" in line
        assert f"previous checkpoint {int(saved[-1].stem.split('_')[1])} ({saved[-1]}) is intact" in line
        assert not [p for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]
        assert load_checkpoint(saved[-1])["step"] == int(saved[-1].stem.split("_")[1])


def test_simulated_disk_full_while_checkpointing(tmp_path, cache, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def filling_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    assert main(["train", *micro_args(cache), "--steps", "6", "--out", str(out), "--ckpt-every", "2"]) == 4
    line = one_line(capsys.readouterr().err)
    assert "no space left on" in line and "step_00000004.pt; previous checkpoint 2" in line and "is intact" in line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002.pt"]


def test_simulated_disk_full_while_writing_metrics(tmp_path, cache, capsys, monkeypatch):
    out = tmp_path / "run"
    real_write = os.write

    def write(fd, data):
        if b'"step": 3' in data:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert main(["train", *micro_args(cache), "--steps", "6", "--out", str(out), "--ckpt-every", "2"]) == 4
    line = one_line(capsys.readouterr().err)
    assert "no space left on" in line and "metrics.jsonl at step 3" in line and "--resume" in line


def test_disk_full_while_building_the_token_cache(tmp_path, capsys):
    with tmpfs(tmp_path / "tiny", "256k") as disk:
        argv = ["train", *micro_args(str(disk / "cache")), "--steps", "2", "--out", str(tmp_path / "run")]
        assert main(argv) == 4
        line = one_line(capsys.readouterr().err)
        assert f"no space left on {disk}" in line
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name]


def test_read_only_out_is_one_line(tmp_path, cache, capsys):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as disk:
        assert main(["train", *micro_args(cache), "--steps", "2", "--out", str(disk / "run")]) == 4
        assert "read-only file system" in one_line(capsys.readouterr().err)


# -- caches -----------------------------------------------------------------------------------------------

def _shards(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("shards-")]
    return folder


@pytest.mark.parametrize("damage", ["half_train", "odd_size", "empty_val", "garbage_meta", "incomplete_meta"])
def test_a_damaged_shard_cache_is_rebuilt_never_used_silently(tmp_path, capsys, small_corpus, damage):
    cache = tmp_path / "cache"
    argv = ["train", *micro_args(str(cache)), "--steps", "2", "--eval-every", "0", "--data", small_corpus]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    shards = _shards(cache)
    good = (shards / "train.bin").read_bytes()
    if damage == "half_train":
        (shards / "train.bin").write_bytes(good[: len(good) // 2])
    elif damage == "odd_size":
        (shards / "train.bin").write_bytes(good + b"\x01")
    elif damage == "empty_val":
        (shards / "val.bin").write_bytes(b"")
    elif damage == "garbage_meta":
        (shards / "meta.json").write_text("\x00\x01 not json")
    else:
        meta = json.loads((shards / "meta.json").read_text())
        del meta["files"]
        (shards / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "rebuilding the token shards" in err and str(shards) in err
    assert (shards / "train.bin").read_bytes() == good
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_full_cache_verification_catches_a_flipped_byte(tmp_path, capsys, small_corpus):
    cache = tmp_path / "cache"
    argv = ["train", *micro_args(str(cache)), "--steps", "1", "--eval-every", "0", "--data", small_corpus]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    train_bin = _shards(cache) / "train.bin"
    data = bytearray(train_bin.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # outside the checked ends: only the full check sees it
    train_bin.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "rebuilding" not in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "c"), "--verify-cache"]) == 0
    assert "does not match its recorded checksum" in capsys.readouterr().err
    assert train_bin.read_bytes()[middle] != data[middle]


def test_a_truncated_tokenizer_file_is_retrained_and_the_corpus_tokenised_once(tmp_path, capsys, small_corpus):
    cache = tmp_path / "cache"
    argv = ["train", *micro_args(str(cache)), "--steps", "1", "--eval-every", "0", "--data", small_corpus]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert len([p for p in cache.iterdir() if p.name.startswith("shards-")]) == 1  # not once per label
    (tokenizer,) = cache.glob("tokenizer-*.json")
    tokenizer.write_text(tokenizer.read_text()[:100])
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert f"{tokenizer} is not a readable tokenizer" in err and "training it again" in err
    assert losses(tmp_path / "a") == losses(tmp_path / "c")


def test_a_long_line_without_whitespace_is_handled(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    normal = "\n\n\n".join(f"document {i} with some words in it, and more words." * 20 for i in range(300))
    corpus.write_text(normal + "\n\n\n" + "x" * 3_000_000 + "\n\n\n" + normal)
    start = time.perf_counter()
    assert main(["train", "--data", str(corpus), *micro_args(str(tmp_path / "cache")), "--steps", "2",
                 "--out", str(tmp_path / "run")]) == 0
    assert time.perf_counter() - start < 120


# -- checkpoints and signals --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random", "truncated", "pickle"])
def test_invalid_checkpoints_are_refused_in_one_line_and_resume_falls_back(tmp_path, cache, capsys, kind):
    out = tmp_path / "run"
    assert main(["train", *micro_args(cache), "--steps", "6", "--out", str(out), "--ckpt-every", "2",
                 "--keep-ckpts", "3", "--stop-after", "4"]) == 0
    newest = list_checkpoints(out / "checkpoints")[-1]
    if kind == "random":
        newest.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        newest.write_bytes(newest.read_bytes()[:5000])
    else:
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        with open(newest, "wb") as f:
            pickle.dump({"step": 4, "x": Evil()}, f)
    capsys.readouterr()
    with pytest.raises(Exception) as info:
        load_checkpoint(newest)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "weights_only=False" not in message
    assert f"{newest} is not a valid gradpower checkpoint" in message and "the previous one is step 2" in message
    (out / "checkpoints" / ".step_00000006.pt.tmp999").write_bytes(b"partial")  # a killed save
    assert main(["train", *micro_args(cache), "--steps", "6", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "trying the previous checkpoint" in err and "left by an interrupted checkpoint save" in err
    assert "weights_only=False" not in err and "pwned" not in err
    assert not (out / "checkpoints" / ".step_00000006.pt.tmp999").exists()


#: Runs ``gradpower`` (argv after the script) with the training loop held at the start of step 10's after-step
#: work until a signal arrives: it writes the file named by GP_PAUSED first, so the test signals at a known step.
PAUSE_AT_STEP_10 = """
import os, sys, time
from pathlib import Path
from gradpower import interrupts
from gradpower.train import loop

after_step = loop.Trainer._after_step

def held(self, session, *args):
    if self.step == 10:
        Path(os.environ["GP_PAUSED"]).write_text("10")
        deadline = time.time() + 60
        while interrupts.requested() is None and time.time() < deadline:
            time.sleep(0.01)
    after_step(self, session, *args)

loop.Trainer._after_step = held
from gradpower.cli import main
sys.argv = ["__main__.py", *sys.argv[1:]]
sys.exit(main())
"""


def test_ctrl_c_writes_a_checkpoint_and_resume_continues_exactly(tmp_path, cache):
    straight = tmp_path / "straight"
    assert main(["train", *micro_args(cache), "--steps", "40", "--out", str(straight)]) == 0
    out, paused = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GP_PAUSED": str(paused)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AT_STEP_10, "train", *micro_args(cache), "--steps", "40",
                             "--out", str(out), "--ckpt-every", "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not paused.exists() and proc.poll() is None:
        time.sleep(0.02)
    assert paused.exists(), "the run never reached step 10"
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130
    line = one_line(err)
    assert "interrupted by SIGINT at step 10/40" in line
    assert f"continue with: {PROGRAM} train --out {out} --resume" in line
    assert [step_of(c) for c in list_checkpoints(out / "checkpoints")] == [10]  # written at the stop
    assert main(["train", *micro_args(cache), "--steps", "40", "--out", str(out), "--resume"]) == 0
    assert losses(out) == losses(straight)


def test_ctrl_c_during_start_up_gives_a_hint_not_a_traceback(tmp_path, cache):
    argv = ["train", *micro_args(cache), "--steps", "5", "--out", str(tmp_path / "run")]
    proc = gradpower(*argv)
    time.sleep(0.5)  # still importing torch
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130
    line = one_line(err)
    assert "Traceback" not in err and f"run the same command again: {PROGRAM} train" in line
    hint = line.split("again: ", 1)[1]
    assert subprocess.run(hint, shell=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
                          ).returncode == 0  # the hint, typed as printed


def finished(run: Path) -> bool:
    """Whether the run in ``run`` reached its last step and final evaluation (False while unreadable)."""
    try:
        return load_run(run).finished
    except RunReadError:
        return False


def test_kill_9_at_random_moments_loses_nothing(tmp_path, cache):
    """kill -9 at several random points, then --resume (or start over when nothing was saved yet):
    the losses equal an uninterrupted run's byte for byte."""
    argv = [*micro_args(cache), "--steps", "30", "--ckpt-every", "3"]
    straight = tmp_path / "straight"
    assert main(["train", *argv, "--out", str(straight)]) == 0
    out = tmp_path / "run"
    rng = random.Random(1234)
    for _ in range(4):
        resume = ["--resume"] if list_checkpoints(out / "checkpoints") else ["--overwrite"]
        proc = gradpower("train", *argv, "--out", str(out), *resume)
        time.sleep(rng.uniform(2.0, 5.0))
        proc.kill()
        proc.wait()
    # a kill can come after the run finished (a fast machine): then there is nothing left to resume
    if not finished(out):
        resume = ["--resume"] if list_checkpoints(out / "checkpoints") else ["--overwrite"]
        assert main(["train", *argv, "--out", str(out), *resume]) == 0
    assert losses(out) == losses(straight)
