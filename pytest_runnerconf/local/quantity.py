"""Kubernetes resource quantities: parse, compare, print canonically, convert to Docker limits."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

# The same pattern Kubernetes reports in its parse error, so messages match the real runner's.
_SPLIT_RE = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_SPLIT = re.compile(_SPLIT_RE)
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$")
_EXPONENT = re.compile(r"^[eE]([-+]?[0-9]+)$")

ERR_FORMAT = f"quantities must match the regular expression '{_SPLIT_RE}'"
ERR_NUMERIC = "unable to parse numeric part of quantity"
ERR_SUFFIX = "unable to parse quantity's suffix"

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXP = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_EXP = {exp: suffix for suffix, exp in _BINARY_SUFFIXES.items()}

# Kubelet's cpu.shares bounds (MinShares / MaxShares in pkg/kubelet/cm).
MIN_SHARES = 2
MAX_SHARES = 262144


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity; the message is Kubernetes' own wording."""


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Quantity:
    """An exact quantity and the format Kubernetes keeps for printing it."""

    value: Fraction
    format: str = DECIMAL_SI

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.value == other.value

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return canonical(self)

    def milli_value(self) -> int:
        """Rounded up, as Kubernetes' MilliValue()."""
        return math.ceil(self.value * 1000)

    def int_value(self) -> int:
        """Rounded up, as Kubernetes' Value()."""
        return math.ceil(self.value)


def parse(text: str) -> Quantity:
    """Parse like resource.ParseQuantity; values finer than 1n are rounded up to 1n."""
    match = _SPLIT.match(text)
    if not match:
        raise QuantityError(ERR_FORMAT)
    number, suffix = match.groups()
    if not _NUMBER.match(number):
        raise QuantityError(ERR_NUMERIC)
    base = Fraction(number.lstrip("+"))
    multiplier, fmt = _suffix(suffix)
    value = _round_up_nano(base * multiplier)
    return Quantity(value, fmt)


def _suffix(suffix: str) -> tuple[Fraction, str]:
    if suffix in _DECIMAL_SUFFIXES:
        return Fraction(10) ** _DECIMAL_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BINARY_SUFFIXES:
        return Fraction(2) ** _BINARY_SUFFIXES[suffix], BINARY_SI
    exp = _EXPONENT.match(suffix)
    if exp:
        return Fraction(10) ** int(exp.group(1)), DECIMAL_EXPONENT
    raise QuantityError(ERR_SUFFIX)


def _round_up_nano(value: Fraction) -> Fraction:
    scaled = value * 10**9
    if scaled.denominator == 1:
        return value
    # Kubernetes rounds away from zero when it drops precision below nano.
    rounded = math.ceil(scaled) if scaled > 0 else math.floor(scaled)
    return Fraction(rounded, 10**9)


def canonical(q: Quantity) -> str:
    """The string the API server returns for this quantity (Quantity.String())."""
    fmt = q.format
    if fmt == BINARY_SI and (-1024 < q.value < 1024 or q.value.denominator != 1):
        # Kubernetes avoids rounding: small or fractional binary values print as DecimalSI.
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        return _canonical_binary(int(q.value))
    mantissa, exponent = _canonical_decimal(q.value)
    if mantissa == 0:
        return "0"
    if fmt == DECIMAL_EXPONENT:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    suffix = _DECIMAL_BY_EXP.get(exponent)
    if suffix is None:
        return f"{mantissa}e{exponent}"
    return f"{mantissa}{suffix}"


def _canonical_decimal(value: Fraction) -> tuple[int, int]:
    """Integer mantissa, exponent a multiple of 3, with as few trailing zeros as that allows."""
    if value == 0:
        return 0, 0
    exponent = -9
    mantissa = int(value * 10**9)  # exact: parse() keeps at most nano precision
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    shift = exponent % 3
    return mantissa * 10**shift, exponent - shift


def _canonical_binary(value: int) -> str:
    power = 0
    while value != 0 and value % 1024 == 0 and power < 60:
        value //= 1024
        power += 10
    return f"{value}{_BINARY_BY_EXP.get(power, '')}"


def canonicalize(text: str) -> str:
    return canonical(parse(text))


def memory_bytes(q: Quantity) -> int:
    """Docker --memory in bytes (Kubernetes' Value(), rounded up)."""
    return q.int_value()


def nano_cpus(q: Quantity) -> int:
    """Docker NanoCpus for a CPU limit; Kubernetes works in millicores, so finer values round up to 1m."""
    return q.milli_value() * 1_000_000


def cpu_shares(request: Quantity | None) -> int:
    """cgroup v1 cpu.shares the kubelet derives from a CPU request (MilliCPUToShares)."""
    if request is None or request.value == 0:
        return MIN_SHARES
    shares = request.milli_value() * 1024 // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def _as_quantity(value: str | Quantity) -> Quantity:
    return value if isinstance(value, Quantity) else parse(value)


def memory_to_bytes(value: str | Quantity) -> int:
    """memory_bytes() for a quantity string such as "512Mi"."""
    return memory_bytes(_as_quantity(value))


def cpu_to_nano(value: str | Quantity) -> int:
    """nano_cpus() for a quantity string such as "500m"."""
    return nano_cpus(_as_quantity(value))
