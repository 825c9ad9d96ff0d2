"""The configs that ship with the code: `configs/` of a checkout, `infiniattention/configs/` when installed.

`pip install .` copies the repository's `configs/*.yaml` into the package (pyproject.toml maps the folder
as package data), so `--config tiny` works from any folder, with or without a checkout.
"""

from __future__ import annotations

from pathlib import Path

from infiniattention.training.errors import UserError

_PACKAGE = Path(__file__).resolve().parents[1]


def configs_dir() -> Path:
    """The folder of the shipped configs: the installed copy first, else the checkout's."""
    installed = _PACKAGE / "configs"
    return installed if installed.is_dir() else _PACKAGE.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the shipped configs (`tiny`, `enwik8_base`, ...)."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def config_path(arg: str) -> str:
    """`--config` as given when it is a file, else the shipped config of that name (`tiny`, `tiny.yaml`,
    `configs/tiny.yaml` from any folder); a one-line error listing the shipped names when neither exists."""
    if Path(arg).exists():  # a folder or a device: the config loader says what it is
        return arg
    name = Path(arg).name
    shipped = configs_dir() / (name if name.endswith(".yaml") else name + ".yaml")
    if shipped.is_file() and Path(arg).parent in (Path("."), Path("configs")):
        return str(shipped)
    raise UserError(f"config file {arg} not found; give a YAML file, or the name of a shipped config: "
                    + ", ".join(shipped_configs()))
