"""Data fingerprints: what a rerun notices, with and without hashing the audio."""

import os

from slukd.data.fingerprint import compare, fingerprint


def test_audio_hash_catches_a_same_size_same_mtime_edit_and_touching_metadata_is_no_change(tmp_path):
    meta, wav = tmp_path / "train.jsonl", tmp_path / "a.flac"
    meta.write_text("line\n")
    wav.write_bytes(b"\x01" * 64)
    fast, full = fingerprint([meta], [str(wav)]), fingerprint([meta], [str(wav)], hash_audio=True)
    st = wav.stat()
    wav.write_bytes(b"\x02" * 64)  # same size
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time
    assert compare(fast, fingerprint([meta], [str(wav)])) == []  # size and time cannot see it
    assert compare(full, fingerprint([meta], [str(wav)], hash_audio=True)) == ["1 audio file(s) modified (a.flac)"]
    os.utime(meta, ns=(st.st_atime_ns + 10**9, st.st_mtime_ns + 10**9))  # touched, same content
    assert compare(full, fingerprint([meta], [str(wav)], hash_audio=True))[:1] == ["1 audio file(s) modified (a.flac)"]
    assert not any("train.jsonl" in c for c in compare(fast, fingerprint([meta], [str(wav)])))
    meta.write_text("line 2\n")
    assert any("train.jsonl changed" in c for c in compare(fast, fingerprint([meta], [str(wav)])))
