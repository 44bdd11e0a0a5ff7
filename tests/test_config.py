"""Settings: layers in order, where each value came from, secrets kept out of files."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.config import Settings, write_setting
from modelctl.record.errors import ConfigError


def test_defaults_follow_home(isolated: Path) -> None:
    settings = Settings.load()
    assert settings.home == isolated and settings.source("home") == "environment MODELCTL_HOME"
    assert settings.database == isolated / "registry.sqlite"
    assert settings.model_dirs == (isolated / "models",)
    assert settings.source("database") == "default"


def test_layers_override_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    global_file = tmp_path / "global.toml"
    global_file.write_text('log_level = "info"\ndatabase = "/g/db.sqlite"\n')
    project = tmp_path / "proj"
    (project / "deep" / "er").mkdir(parents=True)
    (project / "modelctl.toml").write_text(
        'database = "data/reg.sqlite"\nmodel_dirs = ["m1", "/abs/m2"]\n'
    )
    monkeypatch.setenv("MODELCTL_CONFIG", str(global_file))
    monkeypatch.setenv("MODELCTL_LOG_LEVEL", "debug")
    settings = Settings.load(cwd=project / "deep" / "er")
    assert settings.log_level == "debug"
    assert settings.source("log_level") == "environment MODELCTL_LOG_LEVEL"
    # a relative path in a file is relative to that file's folder
    assert settings.database == project / "data" / "reg.sqlite"
    assert settings.source("database") == f"project file {project / 'modelctl.toml'}"
    assert settings.model_dirs == (project / "m1", Path("/abs/m2"))
    assert settings.files["project"] == project / "modelctl.toml"
    over = Settings.load(cwd=project, database=tmp_path / "arg.sqlite")
    assert over.database == tmp_path / "arg.sqlite" and over.source("database") == "argument"


def test_environment_path_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert Settings.load().model_dirs == (tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("log_levle = 'info'", "unknown setting 'log_levle'.*did you mean 'log_level'"),
        ("log_level = 'loud'", "must be one of debug"),
        ("api_key = 'sk-123'", "secret.*MODELCTL_API_KEY"),
        ("not toml at all [", "not valid TOML"),
        ("model_dirs = 3", "list of paths"),
    ],
)
def test_bad_files_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, words: str
) -> None:
    (tmp_path / "work" / "modelctl.toml").write_text(text)
    with pytest.raises(ConfigError, match=words):
        Settings.load()


def test_secrets_come_from_the_environment_and_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCTL_API_KEY", "sk-secret-value")
    settings = Settings.load()
    assert settings.api_key == "sk-secret-value"
    assert settings.shown("api_key") == "********"
    assert "sk-secret-value" not in str(settings.to_dict())


def test_write_setting(tmp_path: Path) -> None:
    path = tmp_path / "work" / "modelctl.toml"
    write_setting(path, "log_level", "info")
    write_setting(path, "model_dirs", "/x:/y")
    assert Settings.load().log_level == "info"
    assert Settings.load().model_dirs == (Path("/x"), Path("/y"))
    write_setting(path, "log_level", None)
    assert Settings.load().log_level == "warning"
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(ConfigError, match="never writes it"):
        write_setting(path, "api_key", "sk-1")
    with pytest.raises(ConfigError, match="unknown setting"):
        write_setting(path, "nope", "1")
    with pytest.raises(ConfigError, match="must be one of"):
        write_setting(path, "log_level", "loud")
    with pytest.raises(ConfigError, match="does not set"):
        write_setting(path, "log_level", None)
    assert "api_key" not in path.read_text()


def test_a_database_url_of_another_scheme_is_an_error_not_a_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`MODELCTL_DATABASE=mysql://…` was taken for a path: the first write made a folder
    named `mysql:` in the working directory (and so did `postgresql://…`, before PostgreSQL)."""
    from modelctl.manager import ModelManager

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("MODELCTL_DATABASE", "mysql://team@db.example/modelctl")
    with pytest.raises(ConfigError, match=r"does not speak mysql:// databases"):
        ModelManager().registry  # noqa: B018
    assert list(here.iterdir()) == []
    monkeypatch.setenv("MODELCTL_DATABASE", f"sqlite://{tmp_path}/team.sqlite")
    assert Settings.load().database == tmp_path / "team.sqlite"
    monkeypatch.setenv("MODELCTL_DATABASE", str(tmp_path / "plain.sqlite"))
    assert Settings.load().database == tmp_path / "plain.sqlite"
    monkeypatch.setenv("MODELCTL_DATABASE", "postgresql://team@db.example/modelctl")
    assert Settings.load().database == "postgresql://team@db.example/modelctl"
