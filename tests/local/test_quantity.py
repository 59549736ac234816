"""Kubernetes quantity parsing, canonical printing, comparison and Docker conversions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pytest_runnerconf.local import quantity as q


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("500m", Fraction(1, 2), "500m"),
        ("2", Fraction(2), "2"),
        ("1.5", Fraction(3, 2), "1500m"),
        ("0.5", Fraction(1, 2), "500m"),
        ("2000m", Fraction(2), "2"),
        ("512Mi", Fraction(512 * 2**20), "512Mi"),
        ("1024Mi", Fraction(2**30), "1Gi"),
        ("1.5Gi", Fraction(3 * 2**29), "1536Mi"),
        ("2Gi", Fraction(2 * 2**30), "2Gi"),
        ("1e3", Fraction(1000), "1e3"),
        ("1E3", Fraction(1000), "1e3"),
        ("100M", Fraction(10**8), "100M"),
        ("1000", Fraction(1000), "1k"),
        ("1500", Fraction(1500), "1500"),
        ("512", Fraction(512), "512"),
        ("0", Fraction(0), "0"),
        ("1n", Fraction(1, 10**9), "1n"),
        # Finer than nano is rounded up, as ParseQuantity does.
        ("0.0000000001", Fraction(1, 10**9), "1n"),
        # A fractional binary value cannot print as Mi/Gi: Kubernetes falls back to DecimalSI.
        ("0.5Ki", Fraction(512), "512"),
    ],
)
def test_parse_and_canonical(text: str, value: Fraction, canonical: str) -> None:
    parsed = q.parse(text)
    assert parsed.value == value
    assert q.canonical(parsed) == canonical
    assert str(parsed) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", q.ERR_FORMAT),
        ("abc", q.ERR_FORMAT),
        ("1Zi", q.ERR_FORMAT),
        ("1.2.3", q.ERR_NUMERIC),
        (".", q.ERR_NUMERIC),
        ("1kk", q.ERR_SUFFIX),
        ("1Ki5", q.ERR_SUFFIX),
    ],
)
def test_invalid_quantities_use_kubernetes_messages(text: str, message: str) -> None:
    with pytest.raises(q.QuantityError) as err:
        q.parse(text)
    assert str(err.value) == message


def test_format_error_quotes_the_kubernetes_pattern() -> None:
    assert q.ERR_FORMAT == (
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


def test_comparison_is_by_value_across_formats() -> None:
    assert q.parse("1500m") == q.parse("1.5")
    assert q.parse("1Gi") == q.parse("1024Mi")
    assert q.parse("1k") == q.parse("1e3")
    assert q.parse("2") > q.parse("1500m")
    assert q.parse("1G") < q.parse("1Gi")
    assert q.parse("513Mi") > q.parse("512Mi")
    assert len({q.parse("1"), q.parse("1000m")}) == 1


def test_memory_bytes_rounds_up() -> None:
    assert q.memory_bytes(q.parse("512Mi")) == 536_870_912
    assert q.memory_bytes(q.parse("100M")) == 100_000_000
    assert q.memory_bytes(q.parse("1500m")) == 2


def test_nano_cpus_work_in_millicores() -> None:
    assert q.nano_cpus(q.parse("1")) == 1_000_000_000
    assert q.nano_cpus(q.parse("1500m")) == 1_500_000_000
    assert q.nano_cpus(q.parse("0.5")) == 500_000_000
    assert q.nano_cpus(q.parse("1n")) == 1_000_000  # below 1m rounds up to 1m, like MilliValue()


@pytest.mark.parametrize(
    ("request_text", "shares"),
    [
        (None, 2),
        ("0", 2),
        ("1m", 2),
        ("100m", 102),
        ("500m", 512),
        ("1", 1024),
        ("2", 2048),
        ("1000", 262144),
    ],
)
def test_cpu_shares_follow_the_kubelet(request_text: str | None, shares: int) -> None:
    request = q.parse(request_text) if request_text is not None else None
    assert q.cpu_shares(request) == shares
