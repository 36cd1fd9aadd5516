from cfbench.core import config


def test_precedence_flag_env_file_default(monkeypatch, isolated_settings):
    monkeypatch.delenv("CFBENCH_RUNS_DIR")
    assert config.resolve("runs_dir").source == "default"
    path = config.set_value("runs_dir", "/from/file")
    assert path == isolated_settings / "config.toml"
    assert config.resolve("runs_dir") == config.Setting("runs_dir", "/from/file", f"file {path}")
    monkeypatch.setenv("CFBENCH_RUNS_DIR", "/from/env")
    assert config.resolve("runs_dir") == config.Setting("runs_dir", "/from/env", "env CFBENCH_RUNS_DIR")
    assert config.resolve("runs_dir", "/from/flag") == config.Setting("runs_dir", "/from/flag", "flag")


def test_set_keeps_other_keys_and_quotes(isolated_settings, monkeypatch):
    monkeypatch.delenv("CFBENCH_WEIGHTS_DIR")
    config.set_value("data_dir", 'C:\\data "x"')
    config.set_value("weights_dir", "/w")
    assert config.resolve("data_dir").value == 'C:\\data "x"'
    assert config.resolve("weights_dir").value == "/w"


def test_bad_file_is_reported(isolated_settings):
    (isolated_settings / "config.toml").write_text('datadir = "/x"\n')
    try:
        config.resolve("data_dir")
    except config.ConfigError as error:
        assert "unknown keys ['datadir']" in str(error)
    else:
        raise AssertionError("unknown key accepted")
