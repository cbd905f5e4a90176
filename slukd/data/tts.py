"""espeak-ng speech synthesis -> float32 mono 16 kHz numpy arrays.

Two back ends, chosen automatically (``backend="auto"``):

* ``binary``: the ``espeak-ng`` program on PATH (``--stdout`` gives a 22.05 kHz 16-bit WAV stream);
* ``library``: libespeak-ng through ctypes, from the ``espeakng-loader`` PyPI package (library + voice data, no
  apt needed) or a system ``libespeak-ng.so.1``.

espeak-ng silently falls back to its default voice for unknown names, so voices and variants are whitelisted.
Audio is resampled 22050 -> 16000 Hz with a polyphase filter (``scipy.signal.resample_poly``, up 320 / down 441).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

ESPEAK_RATE = 22050
TARGET_RATE = 16000

#: espeak-ng's distinct English voices (checked to sound different).
VOICES: tuple[str, ...] = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: voice variants ("" = the voice's own); appended as ``voice+variant``.
VARIANTS: tuple[str, ...] = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


class TTSError(RuntimeError):
    """Synthesis failed (no back end, bad voice, or espeak-ng error)."""


@dataclass(frozen=True)
class VoiceSpec:
    """One speaker setting: voice, variant, words per minute (80-450), pitch (0-99), amplitude (0-200)."""

    voice: str = "en-us"
    variant: str = ""
    rate: int = 160
    pitch: int = 50
    amplitude: int = 100

    def name(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


def check_voice(voice: str, variant: str = "") -> None:
    """Raise ValueError unless ``voice`` and ``variant`` are whitelisted."""
    if voice not in VOICES:
        raise ValueError(f"voice {voice!r} not in the whitelist {VOICES}")
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} not in the whitelist {VARIANTS}")


def resample_to_16k(x: np.ndarray, orig_rate: int = ESPEAK_RATE, dtype: type = np.float32) -> np.ndarray:
    """Polyphase resampling to 16 kHz, computed in ``x``'s precision and returned as ``dtype``."""
    from math import gcd

    from scipy.signal import resample_poly

    if orig_rate == TARGET_RATE:
        return x.astype(dtype, copy=False)
    g = gcd(TARGET_RATE, orig_rate)
    return resample_poly(x, TARGET_RATE // g, orig_rate // g).astype(dtype, copy=False)


def _wav_bytes_to_float(data: bytes) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's ``--stdout`` WAV (its size fields may be 0x7fffffff: read to the end of the stream)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TTSError("espeak-ng did not return a WAV stream")
    pos, rate = 12, ESPEAK_RATE
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt ":
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
        if cid == b"data":
            payload = data[pos + 8 :]
            payload = payload[: len(payload) // 2 * 2]
            return np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size
    raise TTSError("no data chunk in espeak-ng's WAV stream")


def _speak_binary(text: str, spec: VoiceSpec, exe: str) -> tuple[np.ndarray, int]:
    cmd = [exe, "-v", spec.name(), "-s", str(spec.rate), "-p", str(spec.pitch), "-a", str(spec.amplitude), "--stdout"]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise TTSError(f"espeak-ng failed ({proc.returncode}) for voice {spec.name()}: {proc.stderr.decode()[:200]}")
    return _wav_bytes_to_float(proc.stdout)


# ----------------------------------------------------------------------------------------------------------------
# ctypes back end
_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE_PARAM, _ESPEAK_VOLUME_PARAM, _ESPEAK_PITCH_PARAM = 1, 2, 3


class _LibEspeak:
    """Process-wide libespeak-ng handle (synchronous mode, samples collected by a callback)."""

    def __init__(self, lib_path: str, data_path: str | None) -> None:
        self.lib = ctypes.CDLL(lib_path)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode() if data_path else None, 0)
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({rate}) with data path {data_path}")
        self.rate = rate
        self._chunks: list[np.ndarray] = []
        self._cb = _SYNTH_CB(self._collect)  # keep a reference alive
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()

    def _collect(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def speak(self, text: str, spec: VoiceSpec) -> tuple[np.ndarray, int]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(spec.name().encode()) != 0:
                raise TTSError(f"libespeak-ng has no voice {spec.name()}")
            self.lib.espeak_SetParameter(_ESPEAK_RATE_PARAM, int(spec.rate), 0)
            self.lib.espeak_SetParameter(_ESPEAK_PITCH_PARAM, int(spec.pitch), 0)
            self.lib.espeak_SetParameter(_ESPEAK_VOLUME_PARAM, int(spec.amplitude), 0)
            self._chunks = []
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            err = self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            if err != 0:
                raise TTSError(f"espeak_Synth failed ({err})")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        x = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return x.astype(np.float32) / 32768.0, self.rate


_LIB: _LibEspeak | None = None


def _library() -> _LibEspeak:
    global _LIB
    if _LIB is None:
        lib_path, data_path = None, None
        try:
            import espeakng_loader  # type: ignore[import-not-found]

            lib_path, data_path = str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())
        except ImportError:
            lib_path = ctypes.util.find_library("espeak-ng")
        if lib_path is None:
            raise TTSError(
                "no espeak-ng: install the binary (apt-get install espeak-ng) or the PyPI package espeakng-loader"
            )
        _LIB = _LibEspeak(lib_path, data_path)
    return _LIB


def available_backend() -> str | None:
    """``"binary"`` when espeak-ng is on PATH, ``"library"`` when espeakng-loader or libespeak-ng is found."""
    if shutil.which("espeak-ng"):
        return "binary"
    try:
        import espeakng_loader  # type: ignore[import-not-found]  # noqa: F401

        return "library"
    except ImportError:
        return "library" if ctypes.util.find_library("espeak-ng") else None


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    variant: str = "",
    amplitude: int = 100,
    backend: str = "auto",
) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` at espeak-ng's own rate -> (float32 waveform in [-1, 1), shape (samples,); sample rate).

    Arguments as in :func:`speak` (which resamples and trims this)."""
    check_voice(voice, variant)
    if not text or not text.strip():
        raise ValueError("speak: empty text")
    spec = VoiceSpec(voice, variant, int(rate), int(pitch), int(amplitude))
    if backend == "auto":
        backend = "binary" if shutil.which("espeak-ng") else "library"
    if backend == "binary":
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise TTSError("espeak-ng binary not on PATH")
        x, sr = _speak_binary(text, spec, exe)
    elif backend == "library":
        x, sr = _library().speak(text, spec)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    if x.size == 0:
        raise TTSError(f"espeak-ng produced no audio for {text!r} ({spec.name()})")
    return x, sr


def speak(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    variant: str = "",
    amplitude: int = 100,
    backend: str = "auto",
    trim: float | None = 0.05,
    trim_threshold: float | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Synthesise ``text`` -> mono waveform at 16 kHz, shape (samples,), ``dtype`` (float32 by default).

    ``voice``/``variant`` must be whitelisted (:data:`VOICES`, :data:`VARIANTS`); ``rate`` in words per minute,
    ``pitch`` 0-99. ``backend``: "auto" (binary if on PATH, else library), "binary" or "library".
    ``trim``: cut leading/trailing silence down to ``trim`` seconds (None keeps it); silence is
    |x| < ``trim_threshold`` (absolute), or < 1% of the peak when ``trim_threshold`` is None.
    ``dtype``: float64 resamples in double precision. The binary back end is bit-exact across calls; the library
    keeps state between calls (lengths may differ by a sample or two).
    """
    x, sr = synthesize(text, voice, rate, pitch, variant, amplitude, backend)
    y = resample_to_16k(x.astype(dtype, copy=False), sr, dtype=dtype)
    return trim_silence(y, trim, abs_threshold=trim_threshold) if trim is not None else y


def trim_silence(
    x: np.ndarray, margin_s: float = 0.05, rel_threshold: float = 0.01, abs_threshold: float | None = None
) -> np.ndarray:
    """Cut leading/trailing samples with |x| below the threshold, keeping ``margin_s`` seconds (16 kHz) each side.

    Threshold: ``abs_threshold`` when given, else ``rel_threshold`` x peak. All-silent input is returned as is."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x
    thr = rel_threshold * peak if abs_threshold is None else abs_threshold
    idx = np.flatnonzero(np.abs(x) >= thr)
    if idx.size == 0:
        return x
    m = int(round(margin_s * TARGET_RATE))
    return x[max(0, idx[0] - m) : idx[-1] + 1 + m]
