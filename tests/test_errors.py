"""Bad input is refused before any work, in one line naming the key or file: exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import assert_one_clear_line, syncer

SOURCE = """
[[sources]]
name = "shop"
base_url = "http://127.0.0.1:1"
"""


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            '[database]\ndsn = "postgresql://u@h:notaport/db"\n' + SOURCE + 'api_key = "k"\n',
            ["database.dsn", "port", "1 and 65535"],
        ),
        (
            '[database]\ndsn = "host=h port=5432x dbname=w"\n' + SOURCE + 'api_key = "k"\n',
            ["database.dsn", "port"],
        ),
        (
            '[database]\ndsn = "host=h connect_timeout=3"\n' + SOURCE + 'api_key = "k"\n',
            ["database.dsn", "'connect_timeout' is not a known keyword"],
        ),
        (
            '[database]\ndsn = "mysql://u@h/db"\n' + SOURCE + 'api_key = "k"\n',
            ["database.dsn", "postgresql://"],
        ),
        (SOURCE + 'api_key = "abc\\ndef"\n', ["sources.shop.api_key", "line break"]),
        (SOURCE + 'api_key = "abc\\u0007def"\n', ["sources.shop.api_key", "control character"]),
        (SOURCE + 'api_key = "abc déf"\n', ["sources.shop.api_key", "a space at character 4"]),
        (
            SOURCE.replace('"shop"', '"' + "s" * 4000 + '"') + 'api_key = "k"\n',
            ["sources[0].name", "4000 characters", "1 to 64 letters"],
        ),
        (
            SOURCE.replace('"shop"', '"a\\u0000b"') + 'api_key = "k"\n',
            ["sources[0].name", "'a\\x00b'", "1 to 64 letters"],
        ),
        (
            SOURCE.replace('"shop"', '"my shop"') + 'api_key = "k"\n',
            ["sources[0].name", "'my shop'"],
        ),
    ],
    ids=[
        "url-port",
        "keyword-port",
        "keyword-unknown",
        "scheme",
        "key-newline",
        "key-control",
        "key-space",
        "name-4000",
        "name-nul",
        "name-space",
    ],
)
async def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    """A malformed DSN port, a key with a control character, an unusable source name: exit 2,
    exactly one line on stderr naming the key, before any connection is tried."""
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    code, out, err = await syncer("--config", str(path), "sync")
    assert code == 2, out + err
    assert_one_clear_line(err, *needles)
    assert len(err) < 600, "the line quotes a long value in full"


async def test_a_malformed_dsn_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    """SYNCER_DATABASE_DSN with a bad port: exit 2, the line names the variable."""
    path = tmp_path / "c.toml"
    path.write_text(SOURCE + 'api_key = "k"\n')
    code, _, err = await syncer(
        "--config",
        str(path),
        "status",
        env={"SYNCER_DATABASE_DSN": "postgresql://u@h:99999/db"},
    )
    assert code == 2
    assert_one_clear_line(err, "SYNCER_DATABASE_DSN", "port")


async def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """A Latin-1 config file: exit 2, one line naming the file and the offending byte."""
    path = tmp_path / "c.toml"
    path.write_bytes((SOURCE + 'api_key = "k"\n# café\n').encode("latin-1"))
    code, _, err = await syncer("--config", str(path), "config", "check")
    assert code == 2
    assert_one_clear_line(err, str(path), "not UTF-8", "0xe9")


async def test_an_api_key_file_that_is_not_utf8_or_has_two_lines_is_named(tmp_path: Path) -> None:
    """api_key_file in Latin-1, or holding two lines: exit 2, one line naming the key and file."""
    key = tmp_path / "key.txt"
    path = tmp_path / "c.toml"
    path.write_text(SOURCE + 'api_key_file = "key.txt"\n')
    key.write_bytes("clé-secrète".encode("latin-1"))
    code, _, err = await syncer("--config", str(path), "config", "check")
    assert code == 2
    assert_one_clear_line(err, "sources.shop.api_key_file", str(key), "not UTF-8")
    key.write_text("first-line-of-key\nsecond-line\n")
    code, _, err = await syncer("--config", str(path), "sync")
    assert code == 2
    assert_one_clear_line(err, "sources.shop.api_key_file", "line break at character 18")
    assert "first-line-of-key" not in err


async def test_an_unknown_source_of_4000_characters_is_shortened(tmp_path: Path) -> None:
    """--source with a 4,000-character name: exit 2, one short line."""
    path = tmp_path / "c.toml"
    path.write_text(SOURCE + 'api_key = "k"\n')
    code, _, err = await syncer("--config", str(path), "sync", "--source", "x" * 4000)
    assert code == 2
    assert_one_clear_line(err, "--source", "4000 characters", "configured: shop")
    assert len(err) < 300
