#!/usr/bin/env python3
"""Extra leak-battery cases (issue 30), in the battery's own format, for scripts/leak-battery:
keys from off-nominal keypad generators (every key, one tone off by -1.5 ... +1.5 %) in noise as
loud as each tone; keys 6, 3 and 0 dB (per tone) under synthetic music and under babble of two
to four espeak-ng voices; keys in white noise as loud as the key (both tones). Its own seeds and
backgrounds, so the Rust tests (tests/leak.rs) are not all the masker is held to.

    leak-battery-extra.py BATTERY_DIR OUTDIR

BATTERY_DIR holds the leak battery's gen.py (its Case, tone, write and speech helpers).
Needs numpy, sox and espeak-ng.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.abspath(sys.argv[1]))
import gen  # noqa: E402  (the battery's generator)

RATE = gen.RATE
SEED = 3030


def keyed(rng, category, name, low_dbm0=-20, on_ms=70, off_ms=120, dev=(0.0, 0.0)):
    c = gen.Case(category, name, low_dbm0=low_dbm0, dev=list(dev))
    c.gap(200)
    for d in gen.keys16(rng):
        c.add(gen.tone(rng, d, on_ms, low_dbm0, 0.0, dev), d)
        c.gap(off_ms)
    c.gap(200)
    return c


def active_scale(x, dbm0):
    act = x[np.abs(x) > 0.01 * np.abs(x).max()]
    return x * (gen.amp(dbm0) / np.sqrt(2)) / np.sqrt(np.mean(act ** 2))


def music(rng, n, dbm0):
    """Bass, chord and melody voices of harmonic notes (equal temperament, 120-700 ms, attack
    and decay, each note its own timbre), with noise hits on a beat."""
    t_all = np.arange(n) / RATE
    x = np.zeros(n)
    for low, span, vib in ((33, 19, 0.0), (52, 19, 0.0), (57, 19, 0.0), (64, 24, 0.005)):
        i = 0
        while i < n:
            m = int(rng.uniform(0.12, 0.7) * RATE)
            f0 = 440 * 2 ** ((low + rng.integers(span) - 69) / 12)
            t = t_all[: min(m, n - i)]
            env = np.minimum(t / 0.008, 1) * np.exp(-rng.uniform(1.5, 7) * t)
            tilt = rng.uniform(0.8, 1.8)
            f = f0 * (1 + vib * np.sin(2 * np.pi * 5 * t))
            ph = 2 * np.pi * np.cumsum(f) / RATE
            note = sum(np.sin(h * ph + rng.uniform(0, 2 * np.pi)) / h ** tilt
                       for h in range(1, int(3600 // f0) + 1))
            x[i:i + len(t)] += rng.uniform(0.4, 1.0) * env * note
            i += m
    beat = int(rng.uniform(0.3, 0.55) * RATE)
    for s in range(0, n - 300, beat):
        x[s:s + 300] += 0.6 * np.exp(-np.arange(300) / 60) * rng.normal(0, 1, 300)
    return active_scale(x, dbm0)


def babble(rng, n, voices, dbm0, tmp):
    x = sum(gen.speech(rng, n // RATE + 1, tmp, dbm0)[:n] for _ in range(voices))
    return active_scale(x, dbm0)


def build(root, tmp):
    rng = np.random.default_rng(SEED)
    for pct in (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5):
        for which, dev in (("low", (pct / 100, 0.0)), ("high", (0.0, pct / 100))):
            c = keyed(rng, "offnominal", f"offnominal_{which}_{pct:+.1f}pct".replace(".", "_"), dev=dev)
            gen.write(root, c, gen.noise_for(c.signal(), -20, 0, rng))
    for below in (6, 3, 0):
        for i in range(3):
            c = keyed(rng, "music", f"music_{below}db_{i}")
            x = c.signal()
            gen.write(root, c, x + music(rng, len(x), -20 + below))
            voices = 2 + i
            c = keyed(rng, "babble", f"babble{voices}_{below}db")
            x = c.signal()
            gen.write(root, c, x + babble(rng, len(x), voices, -20 + below, tmp))
    for i in range(3):
        c = keyed(rng, "noise0", f"noise_key_0db_{i}", off_ms=80)
        gen.write(root, c, gen.noise_for(c.signal(), -20 + 3, 0, rng))
    # No keys: the backgrounds alone, for the share of frames masked.
    n = 20 * RATE
    for i in range(2):
        c = gen.Case("nokey", f"music_alone_{i}")
        c.add(music(rng, n, -15))
        gen.write(root, c)
        c = gen.Case("nokey", f"babble{3 + i}_alone")
        c.add(babble(rng, n, 3 + i, -15, tmp))
        gen.write(root, c)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: leak-battery-extra.py BATTERY_DIR OUTDIR")
    with tempfile.TemporaryDirectory() as tmp:
        build(sys.argv[2], tmp)
