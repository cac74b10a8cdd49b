"""Fewer bytes and fewer seconds for the service, the same transcript: ``api.upload: compact``
and ``api.trim_silence`` measured on the espeak-ng corpus through the local engine.

Bytes: each clip as a 44.1 kHz stereo 16-bit WAV (what a recorder writes; the corpus's own
22.05 kHz mono clips are reported too) against the file ``compact`` uploads (16 kHz mono Opus,
24 kbit/s, made by sttwatch/backends/shrink.py). WER: the local engine (tiny.en, 1 worker x 2
threads) on the WAV and on the Opus file; word times: matched words' start times compared.
Seconds: each clip padded with 60 s of silence on both sides, trimmed as ``trim_silence``
would; the engine's words on the trimmed audio, mapped back with the timeline, against its
words on the padded file.
Goals: bytes ratio >= 20 on the 44.1 kHz stereo WAV; WER within 0.01; word times unchanged
(median |delta| <= 0.05 s); the padded clip uploads about its speech length; mapped
word times within 0.2 s (the engine's own jitter between two inputs included).

Run:  python bench/compact_upload.py [--min-audio 120] [--cache bench/.cache]
"""

from __future__ import annotations

import argparse
import difflib
import statistics
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

from corpus import DEFAULT_CACHE, build_clips, normalize

BYTES_GOAL, WER_GOAL, TIME_GOAL, CUE_GOAL = 20.0, 0.01, 0.05, 0.2
PAD = 60.0


def resave(src: Path, dst: Path, rate: int, channels: int, pad: float = 0.0) -> Path:
    """``src`` as a 16-bit WAV at ``rate`` and ``channels``, with ``pad`` seconds of silence
    before and after."""
    import numpy as np

    with wave.open(str(src), "rb") as w:
        src_rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    n = int(len(pcm) * rate / src_rate)
    out = np.interp(np.arange(n) * src_rate / rate, np.arange(len(pcm)), pcm).astype(np.int16)
    quiet = np.zeros(int(pad * rate), np.int16)
    out = np.concatenate([quiet, out, quiet])
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(out, channels).tobytes())
    return dst


def words_of(result: dict[str, Any]) -> list[tuple[str, float, float]]:
    words = result["results"]["channels"][0]["alternatives"][0]["words"]
    return [(normalize(w["word"]), float(w["start"]), float(w["end"])) for w in words]


def time_deltas(a: list[tuple[str, float, float]],
                b: list[tuple[str, float, float]]) -> list[float]:
    """|start difference| of the words both transcripts share, aligned by text."""
    sm = difflib.SequenceMatcher(a=[w[0] for w in a], b=[w[0] for w in b], autojunk=False)
    return [abs(a[m.a + k][1] - b[m.b + k][1]) for m in sm.get_matching_blocks()
            for k in range(m.size)]


def text_of(result: dict[str, Any]) -> str:
    return str(result["results"]["channels"][0]["alternatives"][0]["transcript"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--min-audio", type=float, default=120)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    import jiwer

    from sttwatch.backends.local import LocalBackend, LocalSettings
    from sttwatch.backends.shrink import encode, keep_ranges, speech_ranges, timeline_of
    from sttwatch.timeline import map_time

    clips = build_clips(args.cache, args.min_audio, 2)
    engine = LocalBackend(LocalSettings(workers=1, threads=2))
    refs, wav_hyps, opus_hyps = [], [], []
    wav_bytes = native_bytes = opus_bytes = 0
    deltas: list[float] = []
    source_s = kept_s = 0.0
    speech_s = 0.0
    cue_deltas: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp:
        for n, clip in enumerate(clips):
            wav = resave(clip.path, Path(tmp) / f"c{n}.wav", 44100, 2)
            opus = Path(tmp) / f"c{n}.ogg"
            encode(wav, opus, opus=True)
            wav_bytes += wav.stat().st_size
            native_bytes += clip.path.stat().st_size
            opus_bytes += opus.stat().st_size
            a = engine.transcribe(wav, f"wav{n}", {})
            b = engine.transcribe(opus, f"opus{n}", {})
            refs.append(normalize(clip.text))
            wav_hyps.append(normalize(text_of(a)))
            opus_hyps.append(normalize(text_of(b)))
            deltas += time_deltas(words_of(a), words_of(b))

            padded = resave(clip.path, Path(tmp) / f"p{n}.wav", 16000, 1, PAD)
            duration = clip.seconds + 2 * PAD
            kept = keep_ranges(speech_ranges(padded), duration, 3.0)
            trimmed = Path(tmp) / f"t{n}.ogg"
            encode(padded, trimmed, opus=True, kept=kept)
            timeline = timeline_of(kept)
            source_s += duration
            speech_s += clip.seconds
            kept_s += sum(e - s for s, e in kept)
            full = words_of(engine.transcribe(padded, f"pad{n}", {}))
            cut = [(w, map_time(s, timeline), map_time(e, timeline, end=True))
                   for w, s, e in words_of(engine.transcribe(trimmed, f"trim{n}", {}))]
            cue_deltas += time_deltas(full, cut)
            print(f"  clip {n + 1}/{len(clips)}: {clip.seconds:.1f} s, WAV {wav.stat().st_size}"
                  f" B -> Opus {opus.stat().st_size} B; padded {duration:.0f} s -> uploads "
                  f"{sum(e - s for s, e in kept):.1f} s", flush=True)
    engine.close()
    wer_wav, wer_opus = jiwer.wer(refs, wav_hyps), jiwer.wer(refs, opus_hyps)
    ratio, native = wav_bytes / opus_bytes, native_bytes / opus_bytes
    med = statistics.median(deltas) if deltas else float("nan")
    audio = sum(c.seconds for c in clips)
    print(f"\n{len(clips)} espeak-ng clips, {audio:.1f} s of speech")
    print(f"bytes: 44.1 kHz stereo WAV {wav_bytes} B / compact {opus_bytes} B = {ratio:.1f}x "
          f"(goal >= {BYTES_GOAL:.0f}x: {'MEETS' if ratio >= BYTES_GOAL else 'MISSES'}); "
          f"the corpus's 22.05 kHz mono WAV: {native:.1f}x")
    print(f"WER: WAV {wer_wav:.4f}, compact {wer_opus:.4f}, delta {wer_opus - wer_wav:+.4f} "
          f"(goal within {WER_GOAL}: "
          f"{'MEETS' if abs(wer_opus - wer_wav) <= WER_GOAL else 'MISSES'})")
    print(f"word start times, {len(deltas)} matched words: median |delta| {med:.3f} s, "
          f"p95 {statistics.quantiles(deltas, n=20)[-1]:.3f} s, max {max(deltas):.3f} s "
          f"(goal median <= {TIME_GOAL}: {'MEETS' if med <= TIME_GOAL else 'MISSES'})")
    cmed = statistics.median(cue_deltas) if cue_deltas else float("nan")
    within = sum(d <= CUE_GOAL for d in cue_deltas) / max(1, len(cue_deltas))
    print(f"trim_silence: {source_s:.0f} s of padded recordings upload {kept_s:.1f} s "
          f"({speech_s:.1f} s of speech; {source_s / kept_s:.1f}x fewer billed seconds); "
          f"mapped word starts vs untrimmed, {len(cue_deltas)} words: median {cmed:.3f} s, "
          f"{within:.1%} within {CUE_GOAL} s, max {max(cue_deltas, default=0):.3f} s "
          f"(goal median <= {CUE_GOAL}: {'MEETS' if cmed <= CUE_GOAL else 'MISSES'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
