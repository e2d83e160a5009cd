"""Target profiles: the built-in host profile, user folders, schema errors."""

from __future__ import annotations

import json
import os

import pytest

from edgeopt.errors import InputError
from edgeopt.targets import builtin_targets_dir, list_targets, load_target


def test_host_profile_is_filled_from_this_machine():
    host = load_target("host")
    assert host.kind == "cpu"
    assert host.cores == os.cpu_count()
    assert host.arch not in ("detect", "")
    assert host.ram_bytes and host.ram_bytes > 2**28
    assert (builtin_targets_dir() / "host.toml").is_file()


def test_cli_list_and_show(cli):
    listed = cli("targets", "list", "--json")
    assert listed.code == 0
    assert "host" in [t["name"] for t in json.loads(listed.stdout)]
    shown = cli("targets", "show", "host", "--json")
    assert shown.code == 0 and json.loads(shown.stdout)["name"] == "host"
    human = cli("targets", "show", "host")
    assert human.code == 0 and "host" in human.stdout


def test_unknown_target(cli):
    result = cli("targets", "show", "rpi99")
    assert result.code == 2 and "unknown target 'rpi99'" in result.stderr and "host" in result.stderr


def test_user_targets_dir_adds_and_validates(tmp_path, cli):
    (tmp_path / "myboard.toml").write_text(
        'schema_version = 1\nname = "myboard"\ndisplay_name = "My board"\nkind = "cpu"\narch = "aarch64"\n'
        'isa_features = ["asimd", "asimddp"]\ncores = 4\nclock_ghz = 1.8\nsources = ["vendor datasheet"]\n')
    names = [t.name for t in list_targets(tmp_path)]
    assert {"host", "myboard"} <= set(names)
    assert load_target("myboard", tmp_path).isa_features == ("asimd", "asimddp")
    result = cli("targets", "show", "myboard", "--targets-dir", tmp_path, "--json")
    assert result.code == 0 and json.loads(result.stdout)["cores"] == 4


@pytest.mark.parametrize("body,fragment", [
    ('schema_version = 1\nname = "bad"\ndisplay_name = "x"\nkind = "cpu"\narch = "x"\ncorez = 4\n', "corez"),
    ('schema_version = 1\nname = "bad"\ndisplay_name = "x"\nkind = "toaster"\narch = "x"\n', "kind"),
    ('schema_version = 1\nname = "other"\ndisplay_name = "x"\nkind = "cpu"\narch = "x"\n', "file name"),
    ('schema_version = 9\nname = "bad"\ndisplay_name = "x"\nkind = "cpu"\narch = "x"\n', "schema_version"),
    ('name = "bad\n', "invalid TOML"),
])
def test_schema_errors_name_the_file_and_field(tmp_path, body, fragment):
    (tmp_path / "bad.toml").write_text(body)
    with pytest.raises(InputError) as info:
        list_targets(tmp_path)
    assert "bad.toml" in str(info.value) and fragment in str(info.value)


def test_missing_targets_dir(cli, tmp_path):
    result = cli("targets", "list", "--targets-dir", tmp_path / "nope")
    assert result.code == 2 and "targets folder not found" in result.stderr
