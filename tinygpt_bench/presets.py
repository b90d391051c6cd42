"""Presets: the model sizes of docs/MODEL.md, one TOML file each under presets/.

A preset is named (`small`) or given as a path to a TOML file with the same keys:

    name = "small"     # optional for a file; defaults to the file's stem
    layers = 3         # L, transformer blocks
    d_model = 96       # C, channels
    heads = 3          # H, attention heads; C % H == 0
    ctx = 64           # T, context length in bytes
    batch = 16         # B, sequences per step
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from tinygpt_bench.errors import UserError, unknown
from tinygpt_bench.resources import resource_dir
from tinygpt_bench.results.schema import check_name

VOCAB = 256  # V: byte-level vocabulary
FIELDS = ("layers", "d_model", "heads", "ctx", "batch")
ORDER = ("tiny", "small", "medium", "large", "xl", "huge", "massive", "mega", "behemoth")


@dataclass(frozen=True)
class Preset:
    name: str
    layers: int  # L
    d_model: int  # C
    heads: int  # H
    ctx: int  # T
    batch: int  # B
    source: str = ""  # file it was read from

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def shrunk(self, max_layers: int = 1, max_batch: int = 2, max_ctx: int = 16) -> "Preset":
        """A copy with the same channel and head shape but fewer layers, rows and positions."""
        return Preset(
            name=f"{self.name}-shrunk",
            layers=min(self.layers, max_layers),
            d_model=self.d_model,
            heads=self.heads,
            ctx=min(self.ctx, max_ctx),
            batch=min(self.batch, max_batch),
            source=self.source,
        )


def presets_dir() -> Path:
    return resource_dir("presets")


def builtin_names() -> list[str]:
    names = [p.stem for p in presets_dir().glob("*.toml")]
    known = [n for n in ORDER if n in names]
    return known + sorted(n for n in names if n not in ORDER)


def _validate(data: dict, where: str, default_name: str) -> Preset:
    allowed = set(FIELDS) | {"name"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}'; allowed keys are name, {', '.join(FIELDS)}")
    values = {}
    for field in FIELDS:
        if field not in data:
            raise UserError(f"{where}: missing field '{field}'; add `{field} = <positive integer>`")
        v = data[field]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{where}: field '{field}' must be a positive integer, got {v!r}")
        values[field] = v
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: field 'name' must be a non-empty string, got {name!r}")
    try:
        check_name(name, "preset")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if values["d_model"] % values["heads"]:
        raise UserError(
            f"{where}: d_model {values['d_model']} is not divisible by heads {values['heads']}; "
            "choose heads that divide d_model"
        )
    return Preset(name=name, source=where, **values)


def load_file(path: Path) -> Preset:
    if not path.is_file():
        raise UserError(f"preset file {path} does not exist; give a built-in name or an existing .toml path")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML ({e}); fix the file's syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; a preset is a TOML file") from None
    preset = _validate(data, str(path), path.stem)
    builtin = presets_dir() / f"{preset.name}.toml"
    if builtin.is_file() and path.resolve() != builtin.resolve():
        raise UserError(f"{path}: name '{preset.name}' is a built-in preset's; give the file its own "
                        f"`name = \"...\"` so its results cannot be mistaken for the built-in {preset.name}")
    return preset


def load(name_or_path: str) -> Preset:
    """Load a built-in preset by name, or a preset TOML file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or "/" in name_or_path:
        return load_file(p)
    f = presets_dir() / f"{name_or_path}.toml"
    if not f.is_file():
        raise unknown("preset", name_or_path, builtin_names(), " or pass a .toml path")
    return load_file(f)


def _shape(p: Preset) -> tuple:
    return tuple(getattr(p, f) for f in FIELDS)


def load_list(spec: str) -> list[Preset]:
    """A comma-separated list of names/paths, or 'all' for every built-in preset."""
    items = builtin_names() if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UserError("empty preset list; give names such as tiny,small or 'all'")
    chosen: dict[str, Preset] = {}
    for s in items:
        p = load(s)
        if p.name in chosen and _shape(p) != _shape(chosen[p.name]):
            raise UserError(f"two presets named '{p.name}' ({chosen[p.name].source} and {p.source}); "
                            "give each preset file its own `name`")
        chosen.setdefault(p.name, p)  # a preset given twice is measured once
    return list(chosen.values())
