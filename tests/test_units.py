"""Sizes and counts parse exactly as written, in every unit (no float truncation at the boundary)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edgeopt.errors import InputError
from edgeopt.units import parse_bytes, parse_count

UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


@pytest.mark.parametrize("text, expected", [
    ("32.379 kB", 32379),  # 32.379 * 1000 is 32378.999... in binary floating point
    ("0.29 kB", 290),  # 0.29 * 1000 = 289.99999999999994
    ("4.35 MB", 4_350_000),  # 4.35 * 1e6 = 4349999.999999999
    ("1.1 GB", 1_100_000_000),
    ("30.492 kB", 30492),
    ("4 MiB", 4 * 1024**2),
    ("0.5 KiB", 512),
    ("1.5 GiB", 3 * 1024**3 // 2),
    ("1.2 KiB", 1228),  # 1228.8 B: a limit of whole bytes, so the same limit as 1228 B
    ("12345", 12345),
    ("12345 B", 12345),
    ("1e3 kB", 1_000_000),
])
def test_sizes_parse_exactly(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("value, expected", [(32378.999, 32378), (1.2e6, 1_200_000), (4096, 4096)])
def test_bare_numbers_are_bytes_as_written(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("text, expected", [
    ("1.2M", 1_200_000), ("1.15M", 1_150_000), ("0.29k", 290), ("4.35 M", 4_350_000), ("3 G", 3 * 10**9),
    ("2.01G", 2_010_000_000), ("800k", 800_000), ("1.1T", 1_100_000_000_000), ("1200000", 1_200_000),
])
def test_counts_parse_exactly(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("size", [1, 999, 32379, 30492, 1_048_577, 123_456_789, 4_349_999])
@pytest.mark.parametrize("unit", list(UNITS))
def test_every_byte_count_round_trips_through_every_unit(size, unit):
    # size / unit is a finite decimal for powers of 2 and of 10: written in full it must mean `size`
    text = f"{Decimal(size) / UNITS[unit]:f} {unit}"
    assert parse_bytes(text) == size
    assert parse_bytes(f"{Decimal(size - 1) / UNITS[unit]:f} {unit}") == size - 1


@pytest.mark.parametrize("bad", ["4 MeB", "-1 kB", "kB", "", "1.2.3 MB", "inf", "nan kB"])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(InputError):
        parse_bytes(bad)


@pytest.mark.parametrize("bad", ["1.2X", "-5", "M", "1.2 MiB", float("inf"), float("nan")])
def test_bad_counts_are_refused(bad):
    with pytest.raises(InputError):
        parse_count(bad)
