"""Settings: one object, built from layers and passed in; never a module-level global.

Layers, each overriding the one before:

    defaults < global file (config.toml in the user config folder, or $MODELCTL_CONFIG)
             < project file (modelctl.toml in the working folder or a parent)
             < environment (MODELCTL_*, and the ecosystem's own names where a setting has one)
             < arguments (`Settings.load(home=...)`, `modelctl --home ...`)

Every value remembers where it came from (`Settings.source(key)`, `modelctl config`). Secrets
are read from the environment only: a file that holds one is refused, and a secret is shown
masked and never written by modelctl.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl.record.errors import ConfigError

__all__ = ["SETTINGS", "Setting", "Settings", "global_config_file", "project_config_file"]

PROJECT_FILE = "modelctl.toml"
GLOBAL_FILE = "config.toml"


def _path(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError("must be a path")
    return Path(os.path.expanduser(os.path.expandvars(str(value))))


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def _database(value: Any) -> Path | str:
    """A SQLite file's path (or `sqlite:///path`), or a `postgresql://` URL, kept as it is; a
    URL of any other scheme is an error that says so (`mysql://…` was taken for a path, and
    made a folder named `mysql:`)."""
    found = _URL.match(str(value).strip()) if isinstance(value, str) else None
    if found is None:
        return _path(value)
    scheme, rest = found.group(1).lower(), found.group(2)
    if scheme in ("sqlite", "file") and rest.startswith("/"):
        return _path(rest)
    if scheme in ("postgresql", "postgres"):
        return str(value).strip()
    raise ValueError(
        f"modelctl does not speak {scheme}:// databases: give a SQLite file's path "
        "(or sqlite:///path), or a postgresql:// URL"
    )


def _paths(value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of paths (in the environment: joined by {os.pathsep!r})")
    return tuple(_path(v) for v in value)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value.lower()

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _url(value: Any) -> str:
    text = _text(value).strip().rstrip("/")
    if "://" not in text:  # OLLAMA_HOST is often written host:port
        text = "http://" + text
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return text


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds") from None
    if seconds <= 0:
        raise ValueError("must be more than 0 seconds")
    return seconds


def _budget(value: Any) -> int:
    from modelctl.record.units import parse_bytes

    budget = parse_bytes(value)
    if budget <= 0:
        raise ValueError("must be more than 0 bytes")
    return budget


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def _names(value: Any) -> tuple[str, ...]:
    """A list of names, or one string of them separated by commas (in the environment)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of names (in the environment: joined by commas)")
    return tuple(v.strip() for v in value if v.strip())


def _count(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _duration(value: Any) -> float:
    """Seconds, or `5m`, `1h`, `30s`; -1 means forever."""
    from modelctl.record.units import parse_duration

    return parse_duration(value)


def _switch(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (in a file: a TOML boolean)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _commands(value: Any) -> dict[str, Any]:
    """Per-model commands: {model: "template"} or {model: {command, ready, parallel, …}},
    each checked where it is used (runtime/supervisor.CommandSpec)."""
    if not isinstance(value, dict):
        raise ValueError('must be a table: [commands] MODEL = "llama-server -m {path} …"')
    for name, spec in value.items():
        if not isinstance(spec, str | dict):
            raise ValueError(f"command for {name!r} must be a template or a table")
    return dict(value)


def _endpoints(value: Any) -> dict[str, dict[str, str | None]]:
    """Named OpenAI-compatible servers: {name: {base_url, api_key_env}}; keys stay in the env."""
    if not isinstance(value, dict):
        raise ValueError("must be a table of [endpoints.NAME] with base_url (and api_key_env)")
    out: dict[str, dict[str, str | None]] = {}
    for name, spec in value.items():
        if not isinstance(spec, dict) or "base_url" not in spec:
            raise ValueError(f"endpoint {name!r} needs base_url")
        unknown = set(spec) - {"base_url", "api_key_env"}
        if unknown:
            raise ValueError(f"endpoint {name!r}: unknown keys {', '.join(sorted(unknown))}")
        out[name] = {"base_url": _url(spec["base_url"]), "api_key_env": spec.get("api_key_env")}
    return out


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: how to read it, its default, where the environment may set it."""

    key: str
    parse: Callable[[Any], Any]
    default: Callable[[dict[str, Any]], Any]  # gets the values settled so far (home first)
    help: str
    env: tuple[str, ...] = ()
    secret: bool = False
    relative: bool = False  # a relative path in a file is relative to that file's folder

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("MODELCTL_" + self.key.upper().replace(".", "__"), *self.env)


def _default_home(_: dict[str, Any]) -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("modelctl", appauthor=False))


def _default_hf_cache(_: dict[str, Any]) -> Path:
    """Where huggingface_hub keeps its cache: $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "huggingface" / "hub"


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting(
            "home", _path, _default_home, "data folder: registry, models, state", relative=True
        ),
        Setting(
            "database",
            _database,
            lambda v: v["home"] / "registry.sqlite",
            "registry database file",
            relative=True,
        ),
        Setting(
            "model_dirs",
            _paths,
            lambda v: (v["home"] / "models",),
            "folders that hold model files",
            relative=True,
        ),
        Setting(
            "log_level",
            _choice("debug", "info", "warning", "error"),
            lambda v: "warning",
            "how much modelctl logs",
        ),
        Setting(
            "api_key",
            _text,
            lambda v: None,
            "key clients must send to modelctl's server",
            secret=True,
        ),
        Setting(
            "server",
            _url,
            lambda v: "http://127.0.0.1:8765",
            "modelctl server URL: `serve` binds it, `load`/`unload`/`use`/`ps` talk to it",
        ),
        Setting(
            "ollama_host",
            _url,
            lambda v: "http://127.0.0.1:11434",
            "Ollama daemon URL",
            env=("OLLAMA_HOST",),
        ),
        Setting(
            "ollama_registry",
            _url,
            lambda v: "https://registry.ollama.ai",
            "the registry Ollama pulls from: its manifests give a model's size before a pull",
        ),
        Setting(
            "lmstudio_url",
            _url,
            lambda v: "http://127.0.0.1:1234",
            "LM Studio server URL",
            env=("LMSTUDIO_URL",),
        ),
        Setting(
            "openai_base_url",
            _url,
            lambda v: "https://api.openai.com/v1",
            "OpenAI API URL",
            env=("OPENAI_BASE_URL",),
        ),
        Setting(
            "openai_api_key",
            _text,
            lambda v: None,
            "OpenAI key",
            env=("OPENAI_API_KEY",),
            secret=True,
        ),
        Setting(
            "openrouter_api_key",
            _text,
            lambda v: None,
            "OpenRouter key",
            env=("OPENROUTER_API_KEY",),
            secret=True,
        ),
        Setting(
            "anthropic_base_url",
            _url,
            lambda v: "https://api.anthropic.com",
            "Anthropic API URL",
            env=("ANTHROPIC_BASE_URL",),
        ),
        Setting(
            "anthropic_api_key",
            _text,
            lambda v: None,
            "Anthropic key",
            env=("ANTHROPIC_API_KEY",),
            secret=True,
        ),
        Setting(
            "endpoints",
            _endpoints,
            lambda v: {},
            "named OpenAI-compatible servers ([endpoints.NAME] base_url, api_key_env)",
        ),
        Setting("http_timeout", _seconds, lambda v: 10.0, "seconds to wait for a backend"),
        Setting(
            "read_timeout",
            _seconds,
            lambda v: 600.0,
            "seconds a remote backend may stay silent inside an answer before the request fails",
        ),
        Setting(
            "memory_budget",
            _budget,
            lambda v: None,
            "bytes loaded models may use (default: free RAM at start, less 1 GiB)",
        ),
        Setting("max_loaded", _positive_int, lambda v: None, "most models loaded at once"),
        Setting(
            "max_body",
            _budget,
            lambda v: 64 << 20,
            "the largest request body the server reads (bytes; 64M); a larger one gets 413",
        ),
        Setting(
            "hosts",
            _names,
            lambda v: (),
            "host names the server answers to besides loopback ones (a web page's Host is checked)",
        ),
        Setting(
            "origins",
            _names,
            lambda v: (),
            "web origins allowed to call the server besides its own (patterns: http://app.local:*)",
        ),
        Setting(
            "max_queue",
            _count,
            lambda v: 512,
            "requests that may wait for a busy model; beyond, 503 with Retry-After",
            env=("OLLAMA_MAX_QUEUE",),
        ),
        Setting(
            "usage_retention",
            _duration,
            lambda v: 90 * 86400.0,
            "seconds the usage ledger keeps each request's row; older ones become daily "
            "totals per model and client (-1: keep every row)",
        ),
        Setting(
            "queue_timeout",
            _duration,
            lambda v: 600.0,
            "seconds a request may wait for a busy model before a 503",
        ),
        Setting(
            "swap_batch",
            _count,
            lambda v: 16,
            "requests a model serves after another begins to wait for its memory, before it yields",
        ),
        Setting(
            "swap_turn",
            _seconds,
            lambda v: 10.0,
            "seconds a model keeps serving after another begins to wait for its memory",
        ),
        Setting(
            "keep_alive",
            _duration,
            lambda v: 300.0,
            "seconds an idle model stays loaded (-1 forever, 0 at once)",
            env=("OLLAMA_KEEP_ALIVE",),
        ),
        Setting(
            "workers",
            _switch,
            lambda v: None,
            "run each local model in a worker process (default: yes for `modelctl serve`, no "
            "for the Python library)",
        ),
        Setting(
            "commands",
            _commands,
            lambda v: {},
            'per-model server commands ([commands] MODEL = "llama-server -m {path} --port '
            '{port}", or a table with command, ready, parallel, stop_signal, load_timeout)',
        ),
        Setting("load_timeout", _seconds, lambda v: 300.0, "seconds a worker may take to load"),
        Setting(
            "shutdown_grace",
            _seconds,
            lambda v: 10.0,
            "seconds a stopping server lets requests in flight finish (then stops the workers)",
        ),
        Setting(
            "hf_endpoint",
            _url,
            lambda v: "https://huggingface.co",
            "Hugging Face Hub URL",
            env=("HF_ENDPOINT",),
        ),
        Setting(
            "hf_cache",
            _path,
            _default_hf_cache,
            "Hugging Face cache folder",
            env=("HF_HUB_CACHE",),
            relative=True,
        ),
    )
}


def global_config_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("MODELCTL_CONFIG"):
        return Path(env["MODELCTL_CONFIG"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("modelctl", appauthor=False)) / GLOBAL_FILE


def project_config_file(cwd: Path | None = None) -> Path | None:
    """The nearest modelctl.toml in `cwd` or a parent."""
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables as dotted keys: `[ollama] host = …` is `ollama.host`."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in SETTINGS:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def read_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file holds, checked: unknown keys and secrets are errors."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    values = _flatten(data)
    for key in values:
        if key not in SETTINGS:
            import difflib

            close = difflib.get_close_matches(key, list(SETTINGS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(SETTINGS)}"
            raise ConfigError(f"{path}: unknown setting {key!r}", hint=hint)
        spec = SETTINGS[key]
        if spec.secret:
            raise ConfigError(
                f"{path}: {key!r} is a secret and is read from the environment only",
                hint=f"remove it from the file and set {spec.env_names[0]}",
            )
    return values


@dataclass(frozen=True)
class Settings:
    """Effective settings; `values` by key, `sources` says where each came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    files: dict[str, Path | None] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        global_file: Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read every layer. Keyword arguments (home=..., database=...) override them all."""
        env = os.environ if env is None else env
        global_file = global_file or global_config_file(env)
        project_file = project_config_file(cwd)
        layers: list[tuple[str, Path | None, dict[str, Any]]] = []
        if global_file.is_file():
            layers.append((f"global file {global_file}", global_file, read_file(global_file)))
        if project_file is not None:
            layers.append((f"project file {project_file}", project_file, read_file(project_file)))
        for spec in SETTINGS.values():
            for name in spec.env_names:
                if env.get(name, "").strip():
                    layers.append((f"environment {name}", None, {spec.key: env[name]}))
                    break
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in given:
            if key not in SETTINGS:
                raise ConfigError(f"unknown setting {key!r}", hint=f"known: {', '.join(SETTINGS)}")
        layers.append(("argument", None, given))

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for spec in SETTINGS.values():  # in order: later defaults may use earlier values
            raw, source, origin = None, "default", None
            for label, path, layer in layers:
                if spec.key in layer:
                    raw, source, origin = layer[spec.key], label, path
            if source == "default":
                values[spec.key] = spec.default(values)
            else:
                try:
                    value = spec.parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"setting {spec.key!r} from {source}: {exc}") from None
                if spec.relative:  # relative to the file that says it, else to the cwd
                    value = _relative_to(value, origin.parent if origin else (cwd or Path.cwd()))
                values[spec.key] = value
            sources[spec.key] = source
        files = {"global": global_file, "project": project_file}
        return cls(values=values, sources=sources, files=files)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    def source(self, key: str) -> str:
        return self.sources[key]

    def shown(self, key: str) -> Any:
        """A value as it may be displayed: secrets masked, paths as text."""
        value = self.values[key]
        if SETTINGS[key].secret:
            return None if value is None else "********"
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [str(v) for v in value]
        if isinstance(value, str) and _URL.match(value):  # a database's URL: no password
            value = re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:********@", value)
            return re.sub(r"(?i)([?&](?:ssl)?password=)[^&]*", r"\1********", value)
        return value

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting with its shown value and its source (what `modelctl config` prints)."""
        return {
            key: {"value": self.shown(key), "source": self.sources[key], "help": SETTINGS[key].help}
            for key in SETTINGS
        }


def _relative_to(value: Any, folder: Path) -> Any:
    if isinstance(value, tuple):
        return tuple(_relative_to(v, folder) for v in value)
    if isinstance(value, str):  # a database's URL
        return value
    return value if value.is_absolute() else folder / value


def write_setting(path: Path, key: str, value: Any | None) -> None:
    """Set (or with None remove) one key in a settings file, atomically; secrets are refused."""
    import tomli_w

    spec = SETTINGS.get(key)
    if spec is None:
        raise ConfigError(f"unknown setting {key!r}", hint=f"known: {', '.join(SETTINGS)}")
    if spec.secret:
        raise ConfigError(
            f"{key!r} is a secret: modelctl never writes it to a file",
            hint=f"set {spec.env_names[0]} in the environment",
        )
    if value is not None:
        try:
            spec.parse(value)
        except ValueError as exc:
            raise ConfigError(f"setting {key!r}: {exc}") from None
    data = _read_toml(path) if path.exists() else {}
    if value is None:
        if key not in data:
            raise ConfigError(f"{path} does not set {key!r}")
        del data[key]
    else:
        data[key] = [str(v) for v in value] if isinstance(value, list | tuple) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(tomli_w.dumps(data), encoding="utf-8")
    os.replace(temporary, path)


def _read_toml(path: Path) -> dict[str, Any]:
    read_file(path)  # check it first: never rewrite a file we cannot read
    with path.open("rb") as handle:
        return tomllib.load(handle)
