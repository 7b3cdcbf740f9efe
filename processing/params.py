"""Names and spellings of the chain's parameters (light: no DSP imports)."""

from __future__ import annotations

PRESET_NAMES = ("original", "adaptive", "gentle", "warm", "bright", "punchy")
INTENSITY_STEPS = 20  # intensity is quantized to steps of 1/20 = 0.05


def canonical_intensity(value: float) -> str:
    """Two-decimal spelling of an intensity quantized to 0.05 steps: 0.351 → '0.35'."""
    steps = round(value * INTENSITY_STEPS)
    return f"{steps // INTENSITY_STEPS}.{(steps % INTENSITY_STEPS) * 5:02d}"
