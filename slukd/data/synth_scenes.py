"""``slukd synth scenes``: the built-in audio-captioning corpus (synthesised sound scenes + 5 captions per clip).

Every clip (16 kHz mono FLAC, 5-10 s) is composed from one to three sound events that the project synthesises itself
(speech by espeak-ng voices through :mod:`slukd.data.tts`, the program or else the library; beeps and tones of a
given pitch and count, sirens, rain and wind textures, a ticking clock, knocking, rising or falling melodies, an
engine hum, a ringing bell) placed with a timing relation: alone, one after another, overlapping, or one in the
background; some events fade in or out. Five differently worded reference
captions are written from the scene description (paraphrase templates, never two identical captions per clip).

Output layout (the Clotho v2 layout, so :func:`slukd.data.captions.prepare_clotho` reads it unchanged)::

    OUT/development/*.flac   OUT/clotho_captions_development.csv   (file_name, caption_1..caption_5)
    OUT/validation/*.flac    OUT/clotho_captions_validation.csv
    OUT/evaluation/*.flac    OUT/clotho_captions_evaluation.csv
    OUT/audio_only/*.flac    OUT/audio_only.csv                    (file_name; clips without captions)
    OUT/scenes_<split>.jsonl the scene description of every clip (events, onsets, relation)
    OUT/corpus_info.json     tier, seed, options and counts (written last: its presence marks a finished corpus)

Tiers: ``tiny`` (tests, seconds), ``demo`` (default; sized so a small teacher learns it on a 2-core CPU),
``full`` (larger, more voices, event kinds and three-event scenes; for GPU users). Each clip is drawn from its own
random generator seeded by (seed, split, index), so a corpus is deterministic for a seed and independent of ``--jobs``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from slukd.data import tts
from slukd.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CORPUS_VERSION = 1
SPLIT_DIRS = {"train": "development", "valid": "validation", "test": "evaluation", "audio_only": "audio_only"}
CAPTION_CSV = {
    "train": "clotho_captions_development.csv",
    "valid": "clotho_captions_validation.csv",
    "test": "clotho_captions_evaluation.csv",
}
N_CAPTIONS = 5


@dataclass(frozen=True)
class Tier:
    """Sizes and variety of one corpus tier."""

    n_train: int
    n_valid: int
    n_test: int
    n_audio_only: int
    min_dur: float
    max_dur: float
    kinds: tuple[str, ...]
    relations: tuple[str, ...]
    voices: dict[str, tuple[str, ...]]
    counts: tuple[int, ...] = (2, 3, 4)
    fade_prob: float = 0.2


_DEMO_KINDS = ("speech", "beeps", "siren", "rain", "ticking", "knocking", "melody", "engine")
_FULL_KINDS = _DEMO_KINDS + ("tone", "wind", "bell")
_REL = ("single", "sequence", "overlap", "background")
TIERS: dict[str, Tier] = {
    "tiny": Tier(24, 8, 8, 16, 5.0, 6.0, _DEMO_KINDS, _REL, {"man": ("en-us+m3",), "woman": ("en-us+f3",)}),
    "demo": Tier(1600, 100, 200, 1600, 5.0, 7.0, _DEMO_KINDS, _REL, {"man": ("en-us+m3",), "woman": ("en-us+f3",)}),
    "full": Tier(
        10000,
        500,
        1000,
        10000,
        5.0,
        10.0,
        _FULL_KINDS,
        _REL + ("three",),
        {
            "man": ("en-us+m3", "en+m1", "en-gb-scotland+m2", "en-us-nyc+m7", "en-029+m4"),
            "woman": ("en-us+f3", "en+f2", "en-gb-x-rp+f4", "en-us-nyc+f1", "en-029+f5"),
        },
        counts=(2, 3, 4, 5),
        fade_prob=0.25,
    ),
}

# Events that can last as long as needed (background / overlap partners); the rest have a natural length.
CONTINUOUS = {"siren", "rain", "wind", "engine", "ticking", "tone"}
NUMBER = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}
WORDS = (
    "the red house is near the river",
    "please open the window",
    "we will meet at noon",
    "the train leaves in ten minutes",
    "turn left at the next corner",
    "my brother likes green apples",
    "the weather is cold today",
    "bring me a cup of tea",
    "the meeting starts after lunch",
    "she reads a book every night",
    "call me when you arrive",
    "the cat sleeps on the sofa",
)


@dataclass
class Event:
    """One sound event of a scene. ``attrs`` holds the kind-specific attributes (pitch, count, voice, ...)."""

    kind: str
    onset: float = 0.0
    duration: float = 0.0
    gain_db: float = 0.0
    fade: str = ""  # "", "in" or "out"
    attrs: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# Synthesis of single events (numpy, float32 in [-1, 1])


def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SAMPLE_RATE


def _ramp(x: np.ndarray, ms: float = 8.0) -> np.ndarray:
    n = min(len(x) // 2, int(SAMPLE_RATE * ms / 1000))
    if n > 0:
        w = np.linspace(0.0, 1.0, n)
        x[:n] *= w
        x[-n:] *= w[::-1]
    return x


def _lowpass_noise(rng: np.random.Generator, n: int, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec *= 1.0 / (1.0 + (freqs / cutoff_hz) ** 4)
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _highpass_noise(rng: np.random.Generator, n: int, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec *= 1.0 / (1.0 + (cutoff_hz / np.maximum(freqs, 1.0)) ** 4)
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _beeps(rng, ev: Event) -> np.ndarray:
    f = ev.attrs["freq"]
    beep, gap = rng.uniform(0.15, 0.22), rng.uniform(0.2, 0.3)
    one = _ramp(np.sin(2 * np.pi * f * _t(int(beep * SAMPLE_RATE))))
    silence = np.zeros(int(gap * SAMPLE_RATE))
    parts = []
    for i in range(ev.attrs["count"]):
        parts.append(one)
        if i + 1 < ev.attrs["count"]:
            parts.append(silence)
    return np.concatenate(parts)


def _knocking(rng, ev: Event) -> np.ndarray:
    gap = rng.uniform(0.22, 0.32)
    n = int(0.12 * SAMPLE_RATE)
    t = _t(n)
    parts = []
    for i in range(ev.attrs["count"]):
        f0 = rng.uniform(140, 190)
        knock = np.exp(-t * 40) * (np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2.3 * f0 * t))
        knock[: int(0.004 * SAMPLE_RATE)] += rng.standard_normal(int(0.004 * SAMPLE_RATE)) * 0.8
        parts.append(knock)
        if i + 1 < ev.attrs["count"]:
            parts.append(np.zeros(int(gap * SAMPLE_RATE)))
    return np.concatenate(parts)


def _melody(rng, ev: Event) -> np.ndarray:
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21])
    n_notes = int(rng.integers(4, 7))
    start = int(rng.integers(0, len(scale) - n_notes + 1))
    steps = scale[start : start + n_notes]
    if ev.attrs["direction"] == "falling":
        steps = steps[::-1]
    base = rng.uniform(260, 330)
    note = rng.uniform(0.22, 0.32)
    n = int(note * SAMPLE_RATE)
    t = _t(n)
    out = []
    for s in steps:
        f = base * 2 ** (s / 12)
        x = np.exp(-t * 4) * (
            np.sin(2 * np.pi * f * t) + 0.4 * np.sin(4 * np.pi * f * t) + 0.2 * np.sin(6 * np.pi * f * t)
        )
        out.append(_ramp(x, 5))
    return np.concatenate(out)


def _bell(rng, ev: Event) -> np.ndarray:
    n = int(1.0 * SAMPLE_RATE)
    t = _t(n)
    f0 = rng.uniform(500, 800)
    strike = sum(
        a * np.sin(2 * np.pi * f0 * r * t) * np.exp(-t * d) for r, a, d in ((1, 1, 3), (2.76, 0.6, 5), (5.4, 0.3, 8))
    )
    parts = []
    for i in range(ev.attrs["count"]):
        parts.append(_ramp(strike.copy(), 2)[: int(0.7 * SAMPLE_RATE)] if i + 1 < ev.attrs["count"] else strike)
    return np.concatenate(parts)


def _continuous(rng, ev: Event) -> np.ndarray:
    n = int(ev.duration * SAMPLE_RATE)
    t = _t(n)
    k = ev.kind
    if k == "siren":
        rate = rng.uniform(0.4, 0.8)
        f = 950 + 350 * np.sin(2 * np.pi * rate * t)
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        x = np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    elif k == "rain":
        x = 0.5 * _highpass_noise(rng, n, 2500)
        drops = rng.random(n) < 60 / SAMPLE_RATE
        x += np.convolve(drops * rng.uniform(0.4, 1.0, n), np.exp(-np.arange(80) / 10.0), mode="same")
    elif k == "wind":
        gust = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * t + rng.uniform(0, 6.3))
        x = _lowpass_noise(rng, n, 400) * gust
    elif k == "engine":
        f0 = rng.uniform(45, 70)
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        x *= 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(6, 10) * t)
        x += 0.3 * _lowpass_noise(rng, n, 300)
    elif k == "ticking":
        period = ev.attrs.get("period", 0.5)
        x = np.zeros(n)
        click = _highpass_noise(rng, int(0.01 * SAMPLE_RATE), 3000) * np.exp(-np.arange(int(0.01 * SAMPLE_RATE)) / 30.0)
        for start in np.arange(rng.uniform(0, period), ev.duration - 0.02, period):
            i = int(start * SAMPLE_RATE)
            x[i : i + len(click)] += click[: n - i]
    elif k == "tone":
        x = np.sin(2 * np.pi * ev.attrs["freq"] * t)
    else:  # pragma: no cover - guarded by the planner
        raise ValueError(f"unknown continuous event kind {k!r}")
    return _ramp(x, 30)


def _speech(rng, ev: Event) -> np.ndarray:
    return synthesize_speech(ev.attrs["text"], ev.attrs["voice"], rate=ev.attrs.get("rate", 165))


def synthesize_speech(text: str, voice: str, rate: int = 165) -> np.ndarray:
    """espeak-ng speech through :func:`slukd.data.tts.speak` -> float64 16 kHz mono, silence trimmed to the speech.

    ``voice`` is ``"name"`` or ``"name+variant"`` (both whitelisted in :mod:`slukd.data.tts`). Resampled in double
    precision and trimmed at |x| < 0.01 with no margin (the corpus's version-1 audio)."""
    name, _, variant = voice.partition("+")
    return tts.speak(text, voice=name, variant=variant, rate=rate, trim=0.0, trim_threshold=0.01, dtype=np.float64)


RENDER: dict[str, Callable[[np.random.Generator, Event], np.ndarray]] = {
    "beeps": _beeps,
    "knocking": _knocking,
    "melody": _melody,
    "bell": _bell,
    "speech": _speech,
}


def render_event(rng: np.random.Generator, ev: Event) -> np.ndarray:
    """The waveform of one event (peak-normalised, with its fade applied); sets ``ev.duration`` for natural ones."""
    x = _continuous(rng, ev) if ev.kind in CONTINUOUS else RENDER[ev.kind](rng, ev)
    x = np.asarray(x, dtype=np.float64)
    x = x / (np.abs(x).max() + 1e-9)
    if ev.fade:
        env = np.linspace(0.05, 1.0, len(x)) ** 2
        x = x * (env if ev.fade == "in" else env[::-1])
    ev.duration = len(x) / SAMPLE_RATE
    return x


# ----------------------------------------------------------------------------------------------------------------------
# Captions: clause and noun-phrase paraphrases per event, relation templates


def _pitch(ev: Event) -> str:
    return ev.attrs["pitch"]


def event_phrases(ev: Event) -> tuple[list[str], list[str]]:
    """(clauses, noun phrases) that describe one event; the fade is folded into the clauses."""
    a, k = ev.attrs, ev.kind
    if k == "speech":
        who = {"man": ("a man", "a male voice", "a guy"), "woman": ("a woman", "a female voice", "a lady")}[a["who"]]
        clauses = [
            f"{who[0]} speaks",
            f"{who[0]} is talking",
            f"{who[1]} speaks",
            f"{who[2]} talks",
            f"{who[0]} says something",
        ]
        nouns = [f"{who[0]} speaking", f"{who[1]}", f"{who[0]} talking", f"{who[2]} talking", f"a {a['who']}'s voice"]
    elif k == "beeps":
        n, p = NUMBER[a["count"]], _pitch(ev)
        clauses = [
            f"{n} {p} beeps sound",
            f"a device beeps {TIMES[a['count']]}",
            f"something beeps {n} times",
            f"{n} {p} pitched beeps ring out",
            f"a machine makes {n} {p} beeps",
        ]
        nouns = [f"{n} {p} beeps", f"{n} {p} pitched beeps", f"{n} beeps", f"{n} short {p} beeps", f"{n} {p} tones"]
    elif k == "tone":
        p = _pitch(ev)
        clauses = [
            f"a steady {p} tone plays",
            f"a {p} pitched tone sounds",
            f"a {p} hum drones",
            f"a constant {p} tone is heard",
            f"a {p} tone rings steadily",
        ]
        nouns = [f"a steady {p} tone", f"a {p} pitched tone", f"a constant {p} tone", f"a {p} tone", f"a {p} drone"]
    elif k == "siren":
        clauses = [
            "a siren wails",
            "a siren is blaring",
            "an emergency siren sounds",
            "a siren goes off",
            "a siren howls",
        ]
        nouns = ["a siren", "a wailing siren", "an emergency siren", "a siren wailing", "a blaring siren"]
    elif k == "rain":
        clauses = ["rain falls", "rain is pouring", "it is raining", "rain patters down", "heavy rain falls"]
        nouns = ["rain", "falling rain", "the sound of rain", "pouring rain", "rain falling"]
    elif k == "wind":
        clauses = ["wind blows", "the wind is blowing", "wind gusts", "a strong wind blows", "wind howls"]
        nouns = ["wind", "blowing wind", "the wind", "gusts of wind", "wind blowing"]
    elif k == "engine":
        clauses = ["an engine hums", "an engine is idling", "a motor runs", "an engine rumbles", "a motor hums"]
        nouns = ["an engine", "a humming engine", "an idling engine", "a running motor", "the hum of an engine"]
    elif k == "ticking":
        clauses = [
            "a clock ticks",
            "a clock is ticking",
            "something ticks steadily",
            "a clock ticks regularly",
            "a timer ticks",
        ]
        nouns = ["a ticking clock", "a clock ticking", "steady ticking", "the ticking of a clock", "ticking"]
    elif k == "knocking":
        n, t = NUMBER[a["count"]], TIMES[a["count"]]
        clauses = [
            f"someone knocks {t}",
            f"someone knocks on a door {t}",
            f"there are {n} knocks",
            f"{n} knocks sound",
            f"a person knocks {t}",
        ]
        nouns = [f"{n} knocks", f"knocking {t}", f"{n} knocks on a door", f"{n} loud knocks", f"someone knocking {t}"]
    elif k == "melody":
        d = a["direction"]
        clauses = [
            f"a {d} melody plays",
            f"a {d} tune is played",
            f"notes play in a {d} melody",
            f"a short {d} melody plays",
            f"a {d} sequence of notes plays",
        ]
        nouns = [f"a {d} melody", f"a {d} tune", f"a short {d} melody", f"{d} notes", f"a {d} sequence of notes"]
    elif k == "bell":
        t = TIMES[a["count"]]
        clauses = [
            f"a bell rings {t}",
            f"a bell is struck {t}",
            f"a bell chimes {t}",
            f"a bell tolls {t}",
            f"someone rings a bell {t}",
        ]
        nouns = [
            f"a bell ringing {t}",
            f"a bell chiming {t}",
            f"a bell struck {t}",
            f"a bell rung {t}",
            f"a bell sounding {t}",
        ]
    else:
        raise ValueError(f"no phrases for event kind {k!r}")
    if ev.fade == "in":
        sfx = [" and gets louder", ", growing louder", " and grows louder", ", getting louder", " and becomes louder"]
        clauses = [c + s for c, s in zip(clauses, sfx)]
    elif ev.fade == "out":
        sfx = [" and fades away", ", fading out", " and then fades out", " and gets quieter", ", growing quieter"]
        clauses = [c + s for c, s in zip(clauses, sfx)]
    return clauses, nouns


REL_TEMPLATES = {
    "single": ["{A}", "{A}", "{A}", "{A}", "{A}"],
    "sequence": ["{A}, then {B}", "{A} followed by {Bn}", "{A} and then {B}", "first {A}, then {B}", "after {An}, {B}"],
    "overlap": ["{A} while {B}", "{A} as {B}", "{B} while {A}", "{An} and {Bn} at the same time", "{A} and {B}"],
    "background": [
        "{A} with {Bn} in the background",
        "{A} while {B} in the background",
        "{Bn} in the background as {A}",
        "{A} over {Bn}",
        "{A} and {Bn} can be heard in the background",
    ],
    "three": [
        "{A}, then {B}, then {C}",
        "{A} followed by {Bn} and then {Cn}",
        "first {A}, then {B}, and finally {C}",
        "{A}, after that {B}, then {C}",
        "after {An} and {Bn}, {C}",
    ],
}


def write_captions(events: list[Event], relation: str, rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` distinct captions: caption i uses relation template i and a shuffled choice of event paraphrases."""
    names = "ABC"
    phrases = [event_phrases(ev) for ev in events]
    order = rng.permutation(N_CAPTIONS)
    caps: list[str] = []
    for i in range(n):
        fill = {}
        for j, (cl, no) in enumerate(phrases):
            fill[names[j]] = cl[(order[i] + j) % len(cl)]
            fill[names[j] + "n"] = no[(order[i] + 2 * j) % len(no)]
        cap = REL_TEMPLATES[relation][i % len(REL_TEMPLATES[relation])].format(**fill)
        caps.append(cap[0].upper() + cap[1:] + ".")
    # guarantee distinct wordings (single-event templates are identical; the paraphrase choice differs by construction)
    seen: set[str] = set()
    for i, c in enumerate(caps):
        k = 0
        while c.lower() in seen:
            k += 1
            cl, _ = phrases[0]
            c = cl[(order[i] + k) % len(cl)]
            c = c[0].upper() + c[1:] + "."
            if k > 2 * len(cl):
                break
        seen.add(c.lower())
        caps[i] = c
    return caps


# ----------------------------------------------------------------------------------------------------------------------
# Scene planning and mixing


def _draw_event(rng: np.random.Generator, tier: Tier, kind: str) -> Event:
    attrs: dict[str, Any] = {}
    if kind == "speech":
        who = str(rng.choice(sorted(tier.voices)))
        attrs = {"who": who, "voice": str(rng.choice(tier.voices[who])), "text": str(rng.choice(WORDS))}
        attrs["rate"] = int(rng.integers(150, 185))
    elif kind in ("beeps", "tone"):
        pitch = str(rng.choice(["high", "low"]))
        attrs = {"pitch": pitch, "freq": float(rng.uniform(1500, 2000) if pitch == "high" else rng.uniform(350, 500))}
        if kind == "beeps":
            attrs["count"] = int(rng.choice(tier.counts))
    elif kind in ("knocking", "bell"):
        attrs = {"count": int(rng.choice(tier.counts if kind == "knocking" else (1, 2, 3)))}
    elif kind == "melody":
        attrs = {"direction": str(rng.choice(["rising", "falling"]))}
    elif kind == "ticking":
        attrs = {"period": float(rng.choice([0.5, 1.0]))}
    return Event(kind=kind, attrs=attrs)


def plan_scene(rng: np.random.Generator, tier: Tier) -> tuple[str, list[Event], float]:
    """Choose relation, events (distinct kinds) and clip duration. Durations/onsets are set by :func:`render_scene`."""
    relation = str(rng.choice(tier.relations))
    duration = float(np.round(rng.uniform(tier.min_dur, tier.max_dur), 2))
    kinds = list(tier.kinds)
    cont = [k for k in kinds if k in CONTINUOUS]
    if relation == "background":
        b = str(rng.choice(cont))
        a = str(rng.choice([k for k in kinds if k != b]))
        chosen = [a, b]
    elif relation == "overlap":
        # one natural-length event over a continuous one, or two continuous ones: both stay audible
        b = str(rng.choice(cont))
        a = str(rng.choice([k for k in kinds if k != b]))
        chosen = [a, b]
    else:
        n = {"single": 1, "sequence": 2, "three": 3}[relation]
        chosen = [str(k) for k in rng.choice(kinds, size=n, replace=False)]
    events = [_draw_event(rng, tier, k) for k in chosen]
    for i, ev in enumerate(events):
        fadeable = relation == "single" or (relation == "sequence" and i == len(events) - 1)
        if fadeable and ev.kind in CONTINUOUS and rng.random() < tier.fade_prob * (3 if relation == "single" else 1):
            ev.fade = str(rng.choice(["in", "out"]))
    if relation == "background":
        events[1].gain_db = -10.0
    if relation == "overlap":
        events[1].gain_db = -4.0
    return relation, events, duration


def render_scene(rng: np.random.Generator, relation: str, events: list[Event], duration: float) -> np.ndarray:
    """Mix the events into one clip of ``duration`` seconds following the relation's timing; fills onsets.

    single: one event after a short lead; sequence/three: events one after another with 0.25-0.5 s gaps;
    overlap: the second (continuous) event starts with the first and lasts about as long; background: the second
    (continuous, -10 dB) event spans the whole clip and the first sits inside it.
    """
    n = int(duration * SAMPLE_RATE)
    lead = rng.uniform(0.2, 0.6)
    placed: list[tuple[Event, float, np.ndarray]] = []
    if relation == "single":
        ev = events[0]
        if ev.kind in CONTINUOUS:
            ev.duration = duration - lead - rng.uniform(0.2, 0.8)
        placed.append((ev, lead, render_event(rng, ev)))
    elif relation in ("sequence", "three"):
        slot = (duration - lead - 0.3) / len(events)
        t = lead
        for ev in events:
            if ev.kind in CONTINUOUS:
                ev.duration = slot * rng.uniform(0.7, 0.9)
            wav = render_event(rng, ev)
            placed.append((ev, t, wav))
            t += ev.duration + rng.uniform(0.25, 0.5)
    elif relation == "overlap":
        a, b = events
        if a.kind in CONTINUOUS:
            a.duration = rng.uniform(0.4, 0.6) * duration
        wa = render_event(rng, a)
        b.duration = min(duration - lead - 0.1, a.duration + rng.uniform(0.3, 1.2))
        wb = render_event(rng, b)
        placed += [(a, lead + rng.uniform(0.0, 0.3), wa), (b, lead, wb)]
    elif relation == "background":
        a, b = events
        if a.kind in CONTINUOUS:
            a.duration = rng.uniform(0.35, 0.5) * duration
        wa = render_event(rng, a)
        b.duration = duration - 0.1
        wb = render_event(rng, b)
        start_max = max(0.3, duration - a.duration - 0.3)
        placed += [(a, rng.uniform(0.3, start_max), wa), (b, 0.05, wb)]
    else:
        raise ValueError(f"unknown relation {relation!r}")
    mix = np.zeros(n)
    for ev, onset, wav in placed:
        ev.onset = float(round(onset, 3))
        i = int(onset * SAMPLE_RATE)
        seg = wav[: max(0, n - i)] * 10 ** (ev.gain_db / 20)
        mix[i : i + len(seg)] += seg
        ev.duration = float(round(len(seg) / SAMPLE_RATE, 3))
    mix += rng.standard_normal(n) * 0.002
    mix = 0.9 * mix / (np.abs(mix).max() + 1e-9)
    return mix.astype(np.float32)


def make_clip(seed: int, split: str, index: int, tier_name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """One clip and its description; depends only on (seed, split, index, tier)."""
    tier = TIERS[tier_name]
    split_id = list(SPLIT_DIRS).index(split)
    rng = np.random.default_rng([seed, split_id, index, CORPUS_VERSION])
    relation, events, duration = plan_scene(rng, tier)
    wav = render_scene(rng, relation, events, duration)
    captions = write_captions(events, relation, rng)
    desc = {
        "relation": relation,
        "duration": duration,
        "events": [asdict(e) for e in events],
        "captions": captions,
    }
    return wav, desc


def _make_and_write(job: tuple[int, str, int, str, str]) -> dict[str, Any]:
    seed, split, index, tier_name, path = job
    wav, desc = make_clip(seed, split, index, tier_name)
    tmp = path + ".tmp.flac"
    sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)
    desc["file_name"] = os.path.basename(path)
    return desc


#: the option that sets each corpus setting, in the recipe (and in ``slukd synth scenes``)
_SCENE_FLAGS = {"tier": "--tier", "seed": "--corpus_seed", "captioned_fraction": "--captioned_fraction",
                "sizes": "sizes", "version": "corpus version"}  # fmt: skip


def scenes_mismatch(out: Path, old: dict, new: dict) -> Exception:
    """The error for a scenes folder made with other settings (a training run never deletes or rebuilds it)."""
    from slukd.data.synth_slu import CorpusError

    diffs = [
        f"{k} {old.get(k)!r} (asked: {new.get(k)!r}, {_SCENE_FLAGS.get(k, k)})" for k in new if old.get(k) != new.get(k)
    ]
    return CorpusError(
        f"{out} holds a scenes corpus with {'; '.join(diffs) or 'other settings'}; a corpus folder is never deleted "
        "or rebuilt: pass the folder's settings or use another --data_folder"
    )


def check_scenes(out_dir: str | os.PathLike, tier: str, seed: int, captioned_fraction: float = 1.0) -> None:
    """Raise ``CorpusError`` when ``out_dir`` holds a scenes corpus of another tier, seed or captioned fraction
    (only its ``corpus_info.json`` is read; a missing corpus is fine: it will be made)."""
    from slukd.data.synth_slu import CorpusError

    info = Path(out_dir) / "corpus_info.json"
    if tier not in TIERS:
        raise CorpusError(f"unknown tier {tier!r}; choose one of {sorted(TIERS)}")
    if not info.is_file():
        return
    try:
        old = json.loads(info.read_text(encoding="utf-8")).get("settings") or {}
    except (json.JSONDecodeError, OSError) as err:
        raise CorpusError(f"{info}: unreadable ({err})") from None
    new = {"tier": tier, "seed": seed, "captioned_fraction": captioned_fraction}
    if any(old.get(k) != v for k, v in new.items()):
        raise scenes_mismatch(Path(out_dir), {k: old.get(k) for k in new}, new)


def generate_scenes(
    out_dir: str | os.PathLike,
    tier: str = "demo",
    seed: int = 0,
    jobs: int = 1,
    captioned_fraction: float = 1.0,
    sizes: dict[str, int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the corpus (layout in the module docstring) and return its ``corpus_info``.

    ``captioned_fraction`` < 1 is the data-scarce option: only that fraction of the training clips (a seeded random
    subset) keeps its captions; the others join the audio-only pool. ``sizes`` overrides split sizes
    (keys ``train``, ``valid``, ``test``, ``audio_only``). Skips the work when ``corpus_info.json`` already records
    the same settings; raises when it records different ones. ``progress``: a tqdm bar per split over the clips
    (shown only when stderr is a terminal). Clips come back in order whatever ``jobs`` is.
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {sorted(TIERS)}")
    if not 0.0 < captioned_fraction <= 1.0:
        raise ValueError(f"captioned_fraction must be in (0, 1], got {captioned_fraction}")
    t = TIERS[tier]
    counts = {"train": t.n_train, "valid": t.n_valid, "test": t.n_test, "audio_only": t.n_audio_only}
    for k, v in (sizes or {}).items():
        if k not in counts:
            raise ValueError(f"unknown split {k!r} in sizes; use {sorted(counts)}")
        counts[k] = int(v)
    settings = {
        "version": CORPUS_VERSION,
        "tier": tier,
        "seed": seed,
        "captioned_fraction": captioned_fraction,
        "sizes": counts,
    }
    out = Path(out_dir)
    info_path = out / "corpus_info.json"
    if info_path.is_file():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        if old.get("settings") == settings:
            logger.info("scenes corpus in %s is complete (%s), nothing to do", out, settings)
            return old
        raise scenes_mismatch(out, old.get("settings") or {}, settings)
    out.mkdir(parents=True, exist_ok=True)
    descs: dict[str, list[dict[str, Any]]] = {}
    for split, count in counts.items():
        (out / SPLIT_DIRS[split]).mkdir(exist_ok=True)
        job_list = [
            (seed, split, i, tier, str(out / SPLIT_DIRS[split] / f"{split}_{i:05d}.flac")) for i in range(count)
        ]
        bar = tqdm(total=count, desc=f"scenes {split}", unit="clip", disable=None if progress else True)
        with bar:
            if jobs > 1 and count > 8:
                with ProcessPoolExecutor(max_workers=jobs) as ex:
                    descs[split] = []
                    for desc in ex.map(_make_and_write, job_list, chunksize=8):  # in job order
                        descs[split].append(desc)
                        bar.update(1)
            else:
                descs[split] = []
                for job in job_list:
                    descs[split].append(_make_and_write(job))
                    bar.update(1)
        logger.info("scenes %s: %d clips", split, count)
    if captioned_fraction < 1.0:
        rng = np.random.default_rng([seed, 99])
        n_keep = max(1, int(round(captioned_fraction * len(descs["train"]))))
        keep = set(rng.permutation(len(descs["train"]))[:n_keep].tolist())
        moved = [d for i, d in enumerate(descs["train"]) if i not in keep]
        descs["train"] = [d for i, d in enumerate(descs["train"]) if i in keep]
        for d in moved:  # the audio stays in development/; the pool CSV names it by a relative path
            d["file_name"] = f"../{SPLIT_DIRS['train']}/{d['file_name']}"
        descs["audio_only"] = descs["audio_only"] + moved
    for split, rows in descs.items():
        atomic_write_jsonl(out / f"scenes_{split}.jsonl", rows)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if split == "audio_only":
            w.writerow(["file_name"])
            for d in rows:
                w.writerow([d["file_name"]])
            atomic_write_text(out / "audio_only.csv", buf.getvalue())
        else:
            w.writerow(["file_name"] + [f"caption_{i + 1}" for i in range(N_CAPTIONS)])
            for d in rows:
                w.writerow([d["file_name"]] + d["captions"])
            atomic_write_text(out / CAPTION_CSV[split], buf.getvalue())
    hours = {s: round(sum(d["duration"] for d in rows) / 3600, 3) for s, rows in descs.items()}
    info = {"settings": settings, "clips": {s: len(r) for s, r in descs.items()}, "hours": hours}
    atomic_write_json(info_path, info)
    logger.info("scenes corpus written to %s: %s", out, info["clips"])
    return info


def cli_main(argv: list[str], prog: str = "slukd synth scenes") -> int:
    """``slukd synth scenes --out DIR [--tier demo] [--seed 0] [--jobs 2] [--captioned_fraction 1.0]
    [--noprogressbar]``."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="example: slukd synth scenes --out data/scenes_tiny --tier tiny")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tier", default="demo", choices=sorted(TIERS), help="corpus size (the recipe's --tier)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (the recipe's --corpus_seed)")
    p.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="synthesis processes")
    p.add_argument(
        "--captioned_fraction",
        type=float,
        default=1.0,
        help="data-scarce option: keep captions for this fraction of training clips; the rest join the audio-only pool",
    )
    p.add_argument("--noprogressbar", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        info = generate_scenes(
            args.out, args.tier, args.seed, args.jobs, args.captioned_fraction, progress=not args.noprogressbar
        )
    except (ValueError, RuntimeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    clips = ", ".join(f"{k} {v}" for k, v in info["clips"].items())
    hours = sum(info["hours"].values())
    print(f"{prog}: {args.out}: {clips} clips ({hours:.2f} h; settings in corpus_info.json)")
    return 0
