"""Settings: typed, loaded from a TOML file, NOVALITE_* variables and flags, with errors that say where."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from novalite.cli import main
from novalite.config import ALL_SERVICES, ConfigError, Settings, example_toml, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "novalite.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without NOVALITE_* variables, whatever the shell running pytest has."""
    for name in list(os.environ):
        if name.upper().startswith("NOVALITE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "novalite.toml"
    path.write_text(text)
    return path


def test_bad_file_value_names_setting_file_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, 'report_interval = "fast"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == f"report_interval = 'fast' in {path}: expected a number"
    assert isinstance(exc.value, ValueError)


def test_cli_exits_2_on_a_bad_file_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'report_interval = "fast"\n')
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"novalite: configuration error: report_interval = 'fast' in {path}: expected a number\n"


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NOVALITE_FAKE_HOSTS", "x")
    with pytest.raises(ConfigError, match=r"^NOVALITE_FAKE_HOSTS='x': expected an integer$"):
        load_settings()
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "novalite: configuration error: NOVALITE_FAKE_HOSTS='x': expected an integer\n"


def test_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "nowhere", "--services", "api,bogus"]) == 2
    err = capsys.readouterr().err
    assert "listen = 'nowhere' on the command line: expected host:port" in err
    assert "services = 'api,bogus' on the command line: unknown service(s) bogus; choose from " in err


def test_several_bad_values_are_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'listen = "8774"\nnetwork_cidr = "10.0.0.1/24"\nquota_cores = -5\n')
    monkeypatch.setenv("NOVALITE_LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    message = str(exc.value)
    assert f"listen = '8774' in {path}: expected host:port" in message
    assert f"network_cidr = '10.0.0.1/24' in {path}: expected a network address in CIDR notation" in message
    assert f"quota_cores = -5 in {path}: expected a number >= -1" in message
    assert "NOVALITE_LOG_LEVEL='chatty': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in message


def test_lists_from_a_comma_separated_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'services = "api, conductor"\nconsole_allowed_origins = "https://a.example"\n')
    settings = load_settings(path)
    assert settings.services == ["api", "conductor"]
    assert settings.console_allowed_origins == ["https://a.example"]

    assert load_settings(write(tmp_path, 'services = ["scheduler"]\n')).services == ["scheduler"]

    monkeypatch.setenv("NOVALITE_SERVICES", "api,conductor")
    assert load_settings().services == ["api", "conductor"]
    monkeypatch.setenv("NOVALITE_SERVICES", '["console", "compute"]')
    assert load_settings().services == ["console", "compute"]


def test_unknown_service_and_unknown_key(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, 'services = "api"\n')).services == ["api"]  # not "a, i, p"
    with pytest.raises(ConfigError, match=r"unknown service\(s\) apii; choose from api, conductor"):
        load_settings(write(tmp_path, 'services = "apii"\n'))

    path = write(tmp_path, 'listen = "127.0.0.1:1"\nlisten_adress = "x"\nbogus = 1\n')
    with pytest.raises(ConfigError, match=rf"^unknown setting\(s\) in {path}: bogus, listen_adress$"):
        load_settings(path)


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:1001"\nregion = "FileRegion"\nhost = "file-host"\nfake_hosts = 2\n')
    monkeypatch.setenv("NOVALITE_REGION", "EnvRegion")
    monkeypatch.setenv("NOVALITE_HOST", "env-host")
    settings = load_settings(path, host="flag-host", fake_hosts=None)
    assert settings.listen == "127.0.0.1:1001"  # file only
    assert settings.region == "EnvRegion"  # env over file
    assert settings.host == "flag-host"  # flag over env and file
    assert settings.fake_hosts == 2  # a flag of None is not given

    monkeypatch.setenv("NOVALITE_CONFIG", str(path))
    assert load_settings().listen == "127.0.0.1:1001"


def test_driver_table_and_typed_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'state_dir = "~/novalite-state"\nreport_interval = 2\n[driver]\nname = "libvirt"\nuri = "test:///default"\n',
    )
    settings = load_settings(path)
    assert settings.driver == "libvirt"
    assert settings.driver_options == {"uri": "test:///default"}
    assert settings.state_dir == (Path.home() / "novalite-state").resolve()
    assert isinstance(settings.report_interval, float) and settings.report_interval == 2.0

    monkeypatch.setenv("NOVALITE_DRIVER_OPTIONS", '{"vcpus": 4}')
    assert load_settings().driver_options == {"vcpus": 4}
    monkeypatch.setenv("NOVALITE_DRIVER_OPTIONS", "vcpus=4")
    with pytest.raises(ConfigError, match=r"^NOVALITE_DRIVER_OPTIONS='vcpus=4': expected a table"):
        load_settings()


def test_direct_construction_reads_only_its_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVALITE_REGION", "EnvRegion")
    monkeypatch.setenv("NOVALITE_CONFIG", str(write(tmp_path, 'region = "FileRegion"\n')))
    settings = Settings(state_dir=tmp_path / "s", listen="127.0.0.1:9", driver_options={"a": 1})
    assert settings.region == "RegionOne"
    assert settings.state_dir == (tmp_path / "s").resolve()
    assert settings.public_base == "http://127.0.0.1:9"
    assert settings.db_url == f"sqlite:///{(tmp_path / 's').resolve()}/novalite.db"
    assert settings.services == list(ALL_SERVICES)


def test_example_file_is_rendered_from_the_model() -> None:
    """config/novalite.toml is example_toml(): regenerate it with
    ``python -c "from novalite.config import example_toml; print(example_toml(), end='')" > config/novalite.toml``."""
    assert EXAMPLE.read_text() == example_toml()


def test_example_file_holds_every_setting_at_its_default() -> None:
    loaded = load_settings(EXAMPLE)
    defaults = Settings()
    for name in Settings.model_fields:
        if name != "driver_options":  # the example's [driver] table shows the fake driver's options
            assert getattr(loaded, name) == getattr(defaults, name), name
    assert loaded.driver_options == {"vcpus": 16, "memory_mb": 32768, "local_gb": 500, "boot_delay": 0}
