"""Bad input and faults, one test each (the catalogue in docs/reliability.md): every case ends
with its documented exit code and a one-line message naming the file, row or field, before
any slow work, and nothing unsafe in a checkpoint is ever executed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers_audit import fitted_tiny_rm, save_rm, topic_pairs
from helpers_train import small_pairs, tiny_base_dir, write_pairs
from scratch import full_temporary_folder
from rmaudit.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rm(tmp_path_factory) -> Path:
    model, tokenizer = fitted_tiny_rm(topic_pairs())
    return save_rm(model, tokenizer, tmp_path_factory.mktemp("rel") / "rm")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("reldata") / "pairs.jsonl", small_pairs(8))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(capsys, *args) -> tuple[int, str]:
    """(exit code, stderr) of one in-process CLI call; stderr must be one line when the code is 2."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("rmaudit: error")]
        assert len(lines) == 1 and "Traceback" not in err, err
    return code, err


def check(capsys, checkpoint, data, out, *extra) -> tuple[int, str]:
    return run_cli(capsys, "check", checkpoint, "--no-progress", "--probes", "accuracy", "--data", data,
                   "--out", out, *extra)


def copy_rm(rm: Path, to: Path) -> Path:
    shutil.copytree(rm, to)
    return to


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------ untrusted checkpoints

class _WritesAFile:
    """A pickle payload: unpickling it runs ``open(path, "w")``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_only(rm: Path, to: Path, payload=None) -> Path:
    folder = copy_rm(rm, to)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    if payload is not None:
        weights["evil"] = payload
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def test_a_malicious_pickle_is_never_unpickled_with_or_without_allow_pickle(rm, data, in_tmp, capsys):
    marker = in_tmp / "pwned"
    folder = _pickle_only(rm, in_tmp / "evil", _WritesAFile(marker))
    code, err = check(capsys, folder, data, in_tmp / "o1")
    assert code == 2 and "pickle" in err and "--allow-pickle" in err and "pytorch_model.bin" in err
    assert not marker.exists()
    code, err = check(capsys, folder, data, in_tmp / "o2", "--allow-pickle")
    assert code == 2 and "weights_only=True" in err
    assert not marker.exists()


def test_plain_pickle_weights_load_only_with_allow_pickle(rm, data, in_tmp, capsys):
    folder = _pickle_only(rm, in_tmp / "plain")
    assert check(capsys, folder, data, in_tmp / "o1")[0] == 2
    code, _ = check(capsys, folder, data, in_tmp / "o2", "--allow-pickle")
    assert code in (0, 1) and (in_tmp / "o2" / "report.json").is_file()


def test_a_pickle_only_policy_is_refused_before_any_model_loads(rm, data, in_tmp, capsys, monkeypatch):
    import rmaudit.modeling.loading as loading

    policy = _pickle_only(tiny_base_dir(), in_tmp / "policy")
    monkeypatch.setattr(loading, "load_reward_model", lambda *a, **k: pytest.fail("loaded a model"))
    code, err = check(capsys, rm, data, in_tmp / "o", "--policy", policy)
    assert code == 2 and "--policy:" in err and "pytorch_model.bin" in err and "safetensors or GGUF only" in err


def test_a_pickle_only_gold_rm_is_refused_before_any_model_loads_even_with_allow_pickle(rm, data, in_tmp, capsys,
                                                                                       monkeypatch):
    import rmaudit.modeling.loading as loading

    gold = _pickle_only(rm, in_tmp / "gold")
    monkeypatch.setattr(loading, "load_reward_model", lambda *a, **k: pytest.fail("loaded a model"))
    code, err = check(capsys, rm, data, in_tmp / "o", "--gold", gold, "--allow-pickle")
    assert code == 2 and "pytorch_model.bin" in err and "pickle" in err


def test_auto_map_needs_trust_remote_code(rm, data, in_tmp, capsys):
    folder = copy_rm(rm, in_tmp / "remote")
    edit_config(folder, auto_map={"AutoModelForSequenceClassification": "modeling_evil.EvilRM"})
    code, err = check(capsys, folder, data, in_tmp / "o")
    assert code == 2 and "field 'auto_map'" in err and "--trust-remote-code" in err


def test_a_base_causal_lm_is_refused_not_audited_on_a_random_head(data, in_tmp, capsys):
    code, err = check(capsys, tiny_base_dir(), data, in_tmp / "o")
    assert code == 2 and "field 'architectures'" in err and "LlamaForCausalLM is not a reward model" in err
    assert "--allow-fresh-head" in err and not (in_tmp / "o").exists()


def test_num_labels_2_is_refused(rm, data, in_tmp, capsys):
    folder = copy_rm(rm, in_tmp / "two")
    edit_config(folder, num_labels=2, id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})
    code, err = check(capsys, folder, data, in_tmp / "o")
    assert code == 2 and "field 'num_labels': 2" in err


def test_a_truncated_safetensors_file_is_named(rm, data, in_tmp, capsys):
    folder = copy_rm(rm, in_tmp / "cut")
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    code, err = check(capsys, folder, data, in_tmp / "o")
    assert code == 2 and "model.safetensors: unreadable safetensors file" in err


def test_a_folder_without_a_config_is_refused(data, in_tmp, capsys):
    (in_tmp / "empty").mkdir()
    code, err = check(capsys, in_tmp / "empty", data, in_tmp / "o")
    assert code == 2 and "no config.json" in err


def test_a_trainer_output_folder_names_its_newest_checkpoint(rm, data, in_tmp, capsys):
    """transformers' and TRL's Trainer save checkpoint-<step>/ under output_dir; pointing the
    audit at output_dir should say which folder to audit (by step, not by name: 9 < 12)."""
    for step in (9, 12):
        copy_rm(rm, in_tmp / "out" / f"checkpoint-{step}")
    (in_tmp / "out" / "runs").mkdir()
    code, err = check(capsys, in_tmp / "out", data, in_tmp / "o")
    assert code == 2 and "no config.json" in err and "newest checkpoint is checkpoint-12/" in err


def test_a_peft_adapter_folder_is_refused_with_how_to_merge_it(data, in_tmp, capsys):
    """What peft's save_pretrained writes for a LoRA reward model (peft is not a dependency):
    the adapter's config and weights, no model config."""
    from safetensors.torch import save_file

    folder = in_tmp / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8,
                                                            "modules_to_save": ["score"]}))
    save_file({"base_model.model.score.modules_to_save.weight": torch.zeros(1, 32)}, folder / "adapter_model.safetensors")
    code, err = check(capsys, folder, data, in_tmp / "o")
    assert code == 2 and "a PEFT adapter" in err and "merge_and_unload" in err


def test_train_from_a_base_that_is_not_a_model_is_an_input_error(data, in_tmp, capsys):
    (in_tmp / "notamodel").mkdir()
    (in_tmp / "notamodel" / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    code, err = run_cli(capsys, "train", "--base", in_tmp / "notamodel", "--data", data, "--out", in_tmp / "run",
                        "--no-progress", "--max-steps", "1")
    assert code == 2 and "notamodel" in err


# ------------------------------------------------------------------ bad data, named by file, line and field

@pytest.mark.parametrize("name, content, message", [
    ("latin1.csv", "prompt,chosen,rejected\nh\xe9llo,a,b\n".encode("latin-1"), "line 2, column 2: not UTF-8 text (byte 0xe9)"),
    ("cut.jsonl.gz", gzip.compress(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 50)[:40],
     "corrupt or truncated gzip file"),
    ("empty_cell.csv", b"prompt,chosen,rejected\nhi,,b\n", "row 1: field 'chosen': missing (empty cell)"),
    ("role.jsonl", json.dumps({"prompt": [{"role": "wizard", "content": "hi"}], "chosen": "a", "rejected": "b"}).encode(),
     "row 1: field 'prompt': message 1: role 'wizard' is not one of system, user, assistant"),
    ("turns.jsonl", json.dumps({"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                "chosen": "a", "rejected": "b"}).encode(),
     "row 1: field 'prompt': message 2: role 'user' where 'assistant' was expected"),
    ("ends.jsonl", json.dumps({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                               "chosen": "a", "rejected": "b"}).encode(), "row 1: field 'prompt': the prompt ends with an assistant message"),
])
def test_bad_data_is_named_before_the_model_loads(rm, in_tmp, capsys, monkeypatch, name, content, message):
    import rmaudit.inputs

    def never(*_):
        raise AssertionError("the model was loaded before the data was validated")

    monkeypatch.setattr(rmaudit.inputs, "_load_checkpoint", never)
    (in_tmp / name).write_bytes(content)
    code, err = check(capsys, rm, in_tmp / name, in_tmp / "o")
    assert code == 2 and f"{in_tmp / name}: {message}" in err


def test_not_a_datasets_folder(rm, in_tmp, capsys):
    (in_tmp / "notds").mkdir()
    (in_tmp / "notds" / "x.txt").write_text("x")
    code, err = check(capsys, rm, in_tmp / "notds", in_tmp / "o")
    assert code == 2 and "not a datasets save_to_disk folder" in err


def test_skip_bad_rows_counts_and_lists_them_in_the_report(rm, in_tmp, capsys):
    good = [json.dumps(p) for p in small_pairs(8)]
    lines = good[:3] + ["{not json"] + good[3:6] + [json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"})] + good[6:]
    (in_tmp / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    assert check(capsys, rm, in_tmp / "mixed.jsonl", in_tmp / "o1")[0] == 2
    code, _ = check(capsys, rm, in_tmp / "mixed.jsonl", in_tmp / "o2", "--skip-bad-rows")
    assert code in (0, 1)
    context = json.loads((in_tmp / "o2" / "report.json").read_text())["context"]
    assert context["n_eval_pairs"] == 8
    assert context["eval_bad_rows_skipped"].startswith("2; first: ")
    assert "row 4: invalid JSON" in context["eval_bad_rows_skipped"] and "row 8: field 'chosen'" in context["eval_bad_rows_skipped"]
    assert "eval_bad_rows_skipped" in (in_tmp / "o2" / "report.html").read_text()


def test_duplicate_pairs_count_once(rm, in_tmp, capsys):
    pairs = small_pairs(6)
    write_pairs(in_tmp / "dup.jsonl", pairs + pairs[:4])
    assert check(capsys, rm, in_tmp / "dup.jsonl", in_tmp / "o")[0] in (0, 1)
    report = json.loads((in_tmp / "o" / "report.json").read_text())
    assert report["context"]["n_eval_pairs"] == 6 and report["context"]["eval_duplicate_pairs_dropped"] == 4
    assert next(p for p in report["probes"] if p["name"] == "accuracy")["metrics"]["n_pairs"] == 6


# ------------------------------------------------------------------ flags and config, checked before any work

@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-1", "--seed: expected an integer from 0 to 2**32-1, got -1"),
    ("--batch-size", "-3", "--batch-size: expected a positive integer, got -3"),
    ("--max-length", "-5", "--max-length: expected a positive integer, got -5"),
    ("--max-pairs", "0", "--max-pairs: expected a positive integer, got 0"),
    ("--threads", "0", "--threads: expected a positive integer, got 0"),
    ("--device", "gpu", "--device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("--device", "cuda:x", "--device: expected auto, cpu, cuda or cuda:N, got 'cuda:x'"),
])
def test_check_flags_out_of_range(rm, data, in_tmp, capsys, flag, value, message):
    code, err = check(capsys, rm, data, in_tmp / "o", flag, value)
    assert code == 2 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_check_on_a_cuda_device_that_is_absent_is_an_input_error(rm, data, in_tmp, capsys, monkeypatch):
    import rmaudit.modeling.loading as loading

    monkeypatch.setattr(loading, "load_reward_model", lambda *a, **k: pytest.fail("loaded a model"))
    code, err = check(capsys, rm, data, in_tmp / "o", "--device", "cuda")
    assert code == 2 and "--device cuda: no CUDA device is available" in err


def test_check_reports_the_device_threads_and_a_busy_cpu(rm, data, in_tmp, capsys, monkeypatch):
    """A CPU kept busy by another job is said in the report (two torch jobs on two cores slow
    each other down several times over), measured as the run starts: a process spinning on
    one core is seen at once, and a loaded-looking load average (a job that just ended) is
    not taken for one. The thread count is the one asked for."""
    import rmaudit.devices

    if rmaudit.devices.other_busy_cores(0.01) is None:
        pytest.skip("needs /proc/stat (Linux)")
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))  # what a just-ended job leaves
    check(capsys, rm, data, in_tmp / "o", "--json", in_tmp / "r.json")
    context = json.loads((in_tmp / "r.json").read_text())["context"]
    assert "cpu_busy" not in context and context["cpu_threads"] == context["cpu_cores_usable"]
    assert context["cpu_load_at_start"] == 5.0 and context["cpu_busy_cores_at_start"] < 0.5
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        threads = context["cpu_cores_usable"]  # one core short of what the threads want
        code, _ = check(capsys, rm, data, in_tmp / "o", "--device", "cpu", "--threads", threads,
                        "--json", in_tmp / "r.json")
    finally:
        spinner.kill()
        spinner.wait()
    context = json.loads((in_tmp / "r.json").read_text())["context"]
    assert code in (0, 1)
    assert context["device"] == "cpu" and context["cpu_threads"] == threads == torch.get_num_threads()
    assert "already busy" in context["cpu_busy"] and context["cpu_busy_cores_at_start"] >= 0.5


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    import rmaudit.devices

    cores = rmaudit.devices.usable_cores()
    monkeypatch.setattr(rmaudit.devices, "PROC_STAT", Path("/nonexistent/stat"))
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))
    facts = rmaudit.devices.configure_cpu_threads()
    assert f"1-minute load {cores:.1f}" in facts["cpu_busy"] and "cpu_busy_cores_at_start" not in facts
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.0, 0.0))  # less than a core: no warning
    assert "cpu_busy" not in rmaudit.devices.configure_cpu_threads()


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-1", "field 'seed': must be an integer from 0 to 2**32-1, got -1"),
    ("--batch-size", "-3", "field 'batch_size': must be >= 1, got -3"),
    ("--max-length", "-5", "field 'max_length': must be >= 1, got -5"),
])
def test_train_flags_out_of_range(data, in_tmp, capsys, flag, value, message):
    code, err = run_cli(capsys, "train", "--base", tiny_base_dir(), "--data", data, "--out", in_tmp / "run", flag, value)
    assert code == 2 and message in err and not (in_tmp / "run").exists()


def test_train_config_value_of_the_wrong_type(data, in_tmp, capsys):
    (in_tmp / "train.yaml").write_text("lr: fast\nbatch_size: 2\n")
    code, err = run_cli(capsys, "train", "--config", in_tmp / "train.yaml", "--base", tiny_base_dir(), "--data", data,
                        "--out", in_tmp / "run")
    assert code == 2 and "field 'lr': expected a finite number, got 'fast'" in err


def test_gate_config_value_of_the_wrong_type(rm, data, in_tmp, capsys):
    (in_tmp / "rmaudit.toml").write_text('fail_on = 3\n')
    code, err = check(capsys, rm, data, in_tmp / "o", "--config", in_tmp / "rmaudit.toml")
    assert code == 2 and "rmaudit.toml" in err and "fail" in err


def test_max_steps_1_trains_at_the_real_learning_rate(data, in_tmp, capsys):
    code, _ = run_cli(capsys, "train", "--base", tiny_base_dir(), "--data", data, "--out", in_tmp / "run",
                      "--no-progress", "--max-steps", "1", "--lr", "1e-3", "--dtype", "float32")
    assert code == 0
    record = next(json.loads(line) for line in (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "train")
    assert record["lr"] > 0
    assert os.stat(in_tmp / "run" / "model.safetensors").st_mode & 0o044 == 0o044  # readable by others, as mkdir+open make it


def test_out_is_a_file_and_json_is_a_folder_are_found_before_the_audit(rm, data, in_tmp, capsys, monkeypatch):
    import rmaudit.audit

    monkeypatch.setattr(rmaudit.audit, "run_audit", lambda *_: pytest.fail("the audit ran"))
    (in_tmp / "afile").write_text("x")
    code, err = check(capsys, rm, data, in_tmp / "afile")
    assert code == 2 and "--out is a file" in err
    code, err = check(capsys, rm, data, in_tmp / "o", "--json", in_tmp)
    assert code == 2 and "--json is a folder" in err
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine" / "notes.txt").write_text("keep me")
    code, err = check(capsys, rm, data, in_tmp / "mine")
    assert code == 2 and "holds files rmaudit did not write (notes.txt)" in err
    assert (in_tmp / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_out_in_a_read_only_folder_is_found_before_the_audit(rm, data, in_tmp, capsys):
    (in_tmp / "ro").mkdir(mode=0o500)
    code, err = check(capsys, rm, data, in_tmp / "ro" / "out")
    assert code == 2 and "cannot write" in err


def test_disk_full_while_writing_is_exit_2_naming_the_file(rm, data, in_tmp, capsys, monkeypatch):
    import errno

    import rmaudit.report.json_report as json_report

    def full(result, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(json_report, "write_json", full)
    monkeypatch.setattr("rmaudit.report.write_json", full)
    code, err = check(capsys, rm, data, in_tmp / "o")
    assert code == 2 and "report.json: No space left on device" in err


def test_a_full_temporary_folder_is_exit_2_naming_it_and_tmpdir(rm, data, in_tmp, capsys, monkeypatch):
    full_temporary_folder(monkeypatch, in_tmp)
    code, err = check(capsys, rm, data, in_tmp / "o")
    assert code == 2, err
    assert f"{in_tmp}: No space left on device while writing rmaudit's temporary pair store" in err
    assert "set TMPDIR" in err
    assert not (in_tmp / "o").exists()


def test_an_internal_error_asks_for_a_bug_report_without_a_raw_traceback(rm, data, in_tmp, capsys, monkeypatch):
    import rmaudit.audit

    def bug(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(rmaudit.audit, "run_audit", bug)
    monkeypatch.setattr(tempfile, "tempdir", str(in_tmp))  # the crash report lands here, not in /tmp
    code, err = check(capsys, rm, data, in_tmp / "o")
    assert code == 3 and "Traceback" not in err
    assert "internal error: ZeroDivisionError: division by zero" in err and "bug report" in err
    saved = Path(err.rsplit(" ", 1)[-1])
    assert "ZeroDivisionError" in saved.read_text()


# ------------------------------------------------------------------ reports: nothing mixed, nothing stale

def test_a_failed_run_moves_the_previous_report_aside(rm, data, in_tmp, capsys, monkeypatch):
    assert check(capsys, rm, data, in_tmp / "o")[0] in (0, 1)
    before = (in_tmp / "o" / "report.json").read_text()
    (in_tmp / "bad.jsonl").write_text("{broken\n")
    code, err = check(capsys, rm, in_tmp / "bad.jsonl", in_tmp / "o")
    assert code == 2 and "o.previous" in err
    assert not (in_tmp / "o").exists()
    assert (in_tmp / "o.previous" / "report.json").read_text() == before


def test_two_concurrent_checks_on_one_out_do_not_mix(rm, in_tmp):
    many = write_pairs(in_tmp / "many.jsonl", small_pairs(400))
    args = [sys.executable, "-m", "rmaudit", "check", str(rm), "--no-progress", "--probes", "accuracy,length_bias",
            "--data", str(many), "--out", str(in_tmp / "o")]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=in_tmp)
    lock = in_tmp / ".o.rmaudit.lock"
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, cwd=in_tmp, timeout=300)
    still_running = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first.returncode in (0, 1), err
    assert still_running, "the first run ended before the second tried: the test proved nothing"
    assert second.returncode == 2 and f"another rmaudit run (pid {first.pid})" in second.stderr
    report = json.loads((in_tmp / "o" / "report.json").read_text())
    assert [p["name"] for p in report["probes"]] == ["accuracy", "length_bias"]
    assert sorted(p.name for p in (in_tmp / "o").iterdir()) == ["junit.xml", "report.html", "report.json", "summary.md"]


# ------------------------------------------------------------------ bounded work

def test_a_looping_chat_template_is_stopped(rm, data, in_tmp, capsys, monkeypatch):
    import rmaudit.scoring

    monkeypatch.setattr(rmaudit.scoring, "TEMPLATE_SECONDS", 0.5)
    folder = copy_rm(rm, in_tmp / "loop")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    start = time.time()
    code, err = check(capsys, folder, data, in_tmp / "o")
    assert code == 2 and "chat template: rendering one conversation took over 0.5 s" in err
    assert time.time() - start < 60


def test_length_bias_uses_the_lengths_the_model_saw(rm, in_tmp, capsys):
    pairs = small_pairs(24)
    pairs[0]["rejected"] = "word " * 20000
    write_pairs(in_tmp / "long.jsonl", pairs)
    code, _ = run_cli(capsys, "check", rm, "--no-progress", "--probes", "length_bias", "--data", in_tmp / "long.jsonl",
                      "--out", in_tmp / "o", "--max-length", "64")
    assert code in (0, 1)
    metrics = next(p for p in json.loads((in_tmp / "o" / "report.json").read_text())["probes"])["metrics"]
    assert metrics["n_responses_truncated"] >= 1 and metrics["max_untruncated_response_tokens"] >= 20000
    assert metrics["max_length"] == 64


def test_without_a_manifest_the_model_position_limit_bounds_the_texts(rm, data, in_tmp, capsys):
    folder = copy_rm(rm, in_tmp / "nomanifest")
    (folder / "rmaudit.json").unlink(missing_ok=True)
    assert check(capsys, folder, data, in_tmp / "o")[0] in (0, 1)
    context = json.loads((in_tmp / "o" / "report.json").read_text())["context"]
    limit = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    assert context["max_length"] == limit and context["max_length_source"] == "the model's position limit (max_position_embeddings)"


def test_control_characters_from_data_never_reach_a_report_raw(rm, in_tmp, capsys):
    from rmaudit.report.json_report import read_json

    nasty = "ok \x1b[2J\x1b[31mRED \u202egnp.exe\u202c \x00 end"
    pairs = small_pairs(8)
    pairs[0]["prompt"] = nasty
    write_pairs(in_tmp / "nasty.jsonl", pairs)
    code, _ = check(capsys, rm, in_tmp / "nasty.jsonl", in_tmp / "o")
    assert code in (0, 1)
    for name in ("report.html", "summary.md", "junit.xml"):
        text = (in_tmp / "o" / name).read_text(encoding="utf-8")
        for char in ("\x1b", "\u202e", "\x00"):
            assert char not in text, (name, repr(char))
    report = read_json(in_tmp / "o" / "report.json")
    assert report.checkpoint  # report.json itself stays readable (JSON escapes control characters)


# ------------------------------------------------------------------ resume

def _train(capsys, out, data, *extra):
    return run_cli(capsys, "train", "--base", tiny_base_dir(), "--data", data, "--out", out, "--no-progress",
                   "--dtype", "float32", "--max-steps", "4", "--save-every", "2", "--batch-size", "2", *extra)


def test_resume_with_changed_settings_is_refused_unless_forced(data, in_tmp, capsys):
    assert _train(capsys, in_tmp / "run", data)[0] == 0
    code, err = _train(capsys, in_tmp / "run", data, "--resume", in_tmp / "run", "--lr", "3e-5", "--seed", "7")
    assert code == 2 and "lr: 1e-05 then, 3e-05 now" in err and "seed: 42 then, 7 now" in err and "--resume-force" in err
    other = write_pairs(in_tmp / "other.jsonl", small_pairs(10))
    code, err = _train(capsys, in_tmp / "run", other, "--resume", in_tmp / "run")
    assert code == 2 and "data.train" in err
    code, _ = _train(capsys, in_tmp / "run", data, "--resume", in_tmp / "run", "--lr", "3e-5", "--resume-force")
    assert code == 0
    forced = json.loads((in_tmp / "run" / "rmaudit.json").read_text())["run"]["resume_forced_over"]
    assert forced == {"lr": [1e-05, 3e-05]}


def test_resume_tolerates_a_torn_last_log_line(data, in_tmp, capsys):
    assert _train(capsys, in_tmp / "run", data)[0] == 0
    with (in_tmp / "run" / "metrics.jsonl").open("a") as log:
        log.write('{"kind": "train", "step": 5, "lo')
    code, err = _train(capsys, in_tmp / "run", data, "--resume", in_tmp / "run")
    assert code == 0, err
    for line in (in_tmp / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_run_interrupted_before_its_first_checkpoint_restarts_with_the_printed_command(data, in_tmp, capsys):
    out = in_tmp / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 0.69}\n')  # what a killed first step leaves
    code, err = _train(capsys, out, data)
    assert code == 2 and "--resume" in err and str(out) in err
    code, err = _train(capsys, out, data, "--resume", out)
    assert code == 0, err
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_killed_training_resumes_to_the_uninterrupted_weights(data, tmp_path, signal_name):
    import random
    import signal

    args = ["--base", str(tiny_base_dir()), "--data", str(data), "--no-progress", "--dtype", "float32",
            "--max-steps", "6", "--save-every", "1", "--batch-size", "2", "--lr", "1e-3", "--warmup-ratio", "0"]
    command = [sys.executable, str(ROOT / "tests" / "helpers_train.py"), "train", *args]
    subprocess.run([*command, "--out", str(tmp_path / "full")], check=True, capture_output=True, timeout=600)
    # Random points, reproducible: after the k-th checkpoint (0 = before the first one).
    stop_after = random.Random(f"{signal_name}-kill").randrange(0, 6)
    cut = tmp_path / "cut"
    victim = subprocess.Popen([*command, "--out", str(cut)], stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in victim.stderr:
        seen += line.startswith("checkpoint:") or "step-00000" in line
        if (stop_after == 0 and line.startswith("rmaudit train:")) or (stop_after and seen >= stop_after):
            break
    victim.send_signal(getattr(signal, signal_name))
    _, err = victim.communicate(timeout=600)
    if signal_name == "SIGINT" and victim.returncode == 130:
        assert "--resume" in err
    resumed = subprocess.run([*command, "--out", str(cut), "--resume", str(cut)], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    full, again = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    for name in full:
        torch.testing.assert_close(full[name], again[name], rtol=0, atol=0, msg=name)
