"""`rmaudit verify REPORT CKPT`: passes on the audited checkpoint, fails on one changed byte.

Real audits through the CLI on a real saved tiny RM; the changes are made to the real files
(one byte of the weights, the tokenizer, the chat template), as a bad copy or a last-minute
edit before PPO would make them.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers_audit import CANONICAL_FILE, fitted_tiny_rm, save_rm, scaled_head
from rmaudit.cli import main
from rmaudit.probes.canonical_pairs import load_canonical_pairs
from rmaudit.record import file_kind
from tiny_models import require_smollm2


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A healthy checkpoint, its signed passing report, the key pair; and a failing twin's report."""
    require_smollm2()
    root = tmp_path_factory.mktemp("verify")
    model, tokenizer = fitted_tiny_rm(load_canonical_pairs([CANONICAL_FILE]))
    healthy = save_rm(model, tokenizer, root / "healthy")
    negated = save_rm(scaled_head(model, -1.0), tokenizer, root / "negated")
    key, public = _keypair(root)
    assert main(["check", str(healthy), "--probes", "canonical_pairs", "--no-progress", "--out", str(root / "report"),
                 "--sign-key", str(key), "--data", str(CANONICAL_FILE)]) == 0
    assert main(["check", str(negated), "--probes", "canonical_pairs", "--no-progress",
                 "--out", str(root / "negated-report")]) == 1
    return {"root": root, "healthy": healthy, "negated": negated, "report": root / "report" / "report.json",
            "negated_report": root / "negated-report" / "report.json", "key": key, "public": public}


def _keypair(root):
    """An Ed25519 key pair written as PEM files, the way `openssl genpkey -algorithm ed25519` does."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = root / "key.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = root / "key.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def verify(*args):
    return main(["verify", *map(str, args)])


@pytest.fixture
def copy(audited, tmp_path):
    """A byte-for-byte copy of the audited checkpoint, to be changed by the test."""
    return shutil.copytree(audited["healthy"], tmp_path / "ckpt")


def test_record_names_every_file_that_decides_the_reward(audited):
    record = json.loads(audited["report"].read_text())["record"]
    files = record["checkpoint"]
    assert "model.safetensors" in files["weights"] and "config.json" in files["config"]
    assert "tokenizer.json" in files["tokenizer"]
    assert files["chat_template"] or "tokenizer_config.json" in files["tokenizer"]
    assert record["chat_template_sha256"] and len(record["digest"]) == 64
    assert record["data"]["eval"]["sha256"] and record["rmaudit_version"]


def test_verify_passes_on_the_audited_checkpoint_and_a_copy_with_extra_logs(audited, copy, capsys):
    assert verify(audited["report"], audited["healthy"], "--public-key", audited["public"], "--check-data") == 0
    (copy / "README.md").write_text("notes added after the audit\n")
    (copy / "metrics.jsonl").write_text("{}\n")
    assert verify(audited["report"].parent, copy) == 0
    assert "verify: PASS" in capsys.readouterr().out


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_byte_of_the_weights_fails(audited, copy, capsys):
    _flip_last_byte(copy / "model.safetensors")
    assert verify(audited["report"], copy) == 1
    out = capsys.readouterr().out
    assert "weights: model.safetensors changed" in out and "verify: FAIL" in out


def test_a_changed_tokenizer_fails(audited, copy, capsys):
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["content"] += "x"
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert verify(audited["report"], copy) == 1
    assert "tokenizer: tokenizer.json changed" in capsys.readouterr().out


def test_a_changed_or_added_chat_template_fails(audited, copy, capsys):
    template = copy / "chat_template.jinja"
    if template.exists():
        template.write_text(template.read_text().replace("assistant", "assistant "))
        expected = "chat_template: chat_template.jinja changed"
    else:  # the template lives in tokenizer_config.json: a new template file overrides it
        template.write_text("{{ messages[-1]['content'] }}")
        expected = "chat_template: chat_template.jinja added"
    assert verify(audited["report"], copy) == 1
    assert expected in capsys.readouterr().out


def test_a_missing_weight_shard_fails(audited, copy, capsys):
    (copy / "model.safetensors").rename(copy / "model.safetensors.bak")
    assert verify(audited["report"], copy) == 1
    assert "model.safetensors missing" in capsys.readouterr().out


def test_an_identical_copy_of_a_failed_checkpoint_does_not_verify(audited, capsys):
    assert verify(audited["negated_report"], audited["negated"]) == 1
    assert "the audit's gate: fail" in capsys.readouterr().out


def test_an_edited_report_breaks_the_signature_and_the_record(audited, tmp_path, capsys):
    data = json.loads(audited["report"].read_text())
    data["probes"][0]["findings"][0]["value"] = 0.25  # any edit of the verdict's evidence
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    assert verify(edited, audited["healthy"], "--public-key", audited["public"]) == 1
    assert "changed after signing" in capsys.readouterr().out
    data["record"]["checkpoint"]["weights"]["model.safetensors"] = "0" * 64  # repoint the record at other weights
    edited.write_text(json.dumps(data))
    assert verify(edited, audited["healthy"]) == 1
    assert "the record was edited" in capsys.readouterr().out


def test_another_key_and_an_unsigned_report_fail_the_signature_check(audited, tmp_path, capsys):
    _, other = _keypair(tmp_path)
    assert verify(audited["report"], audited["healthy"], "--public-key", other) == 1
    assert "different key" in capsys.readouterr().out
    assert verify(audited["negated_report"], audited["negated"], "--public-key", audited["public"]) == 1
    assert "not signed" in capsys.readouterr().out


def test_openssl_keys_work(audited, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public)], check=True)
    out = tmp_path / "report"
    assert main(["check", str(audited["healthy"]), "--probes", "canonical_pairs", "--no-progress",
                 "--out", str(out), "--sign-key", str(key)]) == 0
    assert verify(out, audited["healthy"], "--public-key", public) == 0


def test_bad_input_is_exit_2_with_the_file_named(audited, tmp_path, capsys):
    old = json.loads(audited["report"].read_text())
    del old["record"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert verify(tmp_path / "old.json", audited["healthy"]) == 2
    assert "old.json" in capsys.readouterr().err
    assert verify(audited["report"], tmp_path / "nowhere") == 2
    (tmp_path / "bad.pem").write_text("not a key")
    assert verify(audited["report"], audited["healthy"], "--public-key", tmp_path / "bad.pem") == 2
    assert main(["check", str(audited["healthy"]), "--probes", "canonical_pairs", "--no-progress",
                 "--sign-key", str(tmp_path / "bad.pem"), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()  # refused before the model loaded or a report was written


@pytest.mark.parametrize("path,kind", [
    ("model-00001-of-00002.safetensors", "weights"), ("model.safetensors.index.json", "weights"),
    ("model.gguf", "weights"), ("tokenizer_config.json", "tokenizer"), ("chat_template.jinja", "chat_template"),
    ("additional_chat_templates/tool_use.jinja", "chat_template"), ("rmaudit.json", "config"),
    ("README.md", None), ("metrics.jsonl", None), ("checkpoint-10/model.safetensors", None),
    ("training_args.bin", None), ("optimizer.pt", None), ("rng_state_1.pth", None), ("pytorch_model.bin", "weights"),
])
def test_file_kinds(path, kind):
    assert file_kind(path) == kind
