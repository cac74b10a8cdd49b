"""Speech corpus shared by the local-engine benchmarks: espeak-ng reads fixed English
paragraphs (several voices and speeds), sox joins them into clips, and the clips are cached.

Not run on its own; imported by local_engine.py and long_file_memory.py. Texts avoid digits
and abbreviations so that the reference and the transcript spell words the same way.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring "
    "these things with her from the store: a few spoons of fresh snow peas and a big toy frog.",
    "We will meet at the library on Monday morning to review the project plan. Bring your "
    "notes from last week, and remember that the room on the second floor is closed for "
    "painting, so we will use the small room near the main entrance instead.",
    "The weather today is sunny with a light breeze from the west. Later this afternoon the "
    "clouds will gather over the hills, and there is a good chance of rain by the evening. "
    "Tomorrow should be cooler, with strong winds along the coast.",
    "Remember to water the plants before you leave for your holiday. The tomatoes need the "
    "most water, the herbs need a little less, and the cactus on the kitchen window should "
    "be left alone entirely.",
    "Our train was delayed for almost an hour because of a signal failure outside the "
    "station. Most passengers waited patiently, some read books, and a few children played "
    "a noisy game of cards on the floor of the carriage.",
    "To make a simple loaf of bread, mix flour, water, salt and yeast in a large bowl. Knead "
    "the dough until it feels smooth and elastic, then cover it with a cloth and let it rise "
    "in a warm place until it has doubled in size.",
    "The committee agreed that the new bridge should be finished before winter. Engineers "
    "warned that the river is higher than usual this year, which may slow the work on the "
    "foundations during the autumn months.",
    "My grandmother kept a small garden behind her house, full of roses, beans and tall "
    "yellow sunflowers. Every summer she gave away baskets of vegetables to the neighbors "
    "and never asked for anything in return.",
    "The museum has opened a new exhibition about the history of flight. Visitors can walk "
    "beneath a wooden glider, sit in the cockpit of an old passenger plane, and watch short "
    "films about the first pilots who crossed the ocean.",
    "When the power went out, the whole street became quiet and dark. People came out of "
    "their houses with candles and torches, and for a while everyone stood talking together "
    "as if it were a summer festival.",
    "Doctors recommend at least half an hour of gentle exercise every day. Walking, "
    "swimming and cycling are all good choices, and even a short walk after dinner can make "
    "a real difference to your health and your sleep.",
    "The old lighthouse stands on a rocky island at the mouth of the harbor. For more than "
    "a century its lamp guided fishing boats home through fog and storms, until it was "
    "finally replaced by an automatic beacon.",
    "Before the meeting ends, I would like to thank everyone who helped organize the "
    "conference. The volunteers worked long hours, the speakers were excellent, and the "
    "feedback from our guests has been wonderful.",
    "The library will be closed on Friday while the heating system is repaired. Books that "
    "are due that day may be returned on Saturday without any fine, and the reading room "
    "will open again at the usual time.",
    "A family of foxes has made its home under the garden shed. In the early evening the "
    "cubs come out to play on the lawn, chasing each other in circles while their mother "
    "watches quietly from the shadow of the hedge.",
    "The recipe calls for a cup of rice, a chopped onion, a handful of peas and some "
    "grated cheese. Stir the rice slowly, adding warm stock a little at a time, until it is "
    "soft and creamy.",
    "Our team finished the quarter ahead of schedule and under budget. The next step is to "
    "test the new software with a small group of customers, collect their comments, and fix "
    "the most important problems before the public release.",
    "The mountain path was steep and narrow, with loose stones that rolled away under our "
    "boots. We stopped often to rest and to admire the view of the valley, where the river "
    "shone like silver in the morning light.",
    "If you have any questions about your order, please contact our support team by email "
    "or by telephone. We try to answer every message within one working day, and we are "
    "always happy to help.",
    "At the end of the evening the orchestra played a slow and beautiful waltz. Couples "
    "moved across the polished floor, the lights were dimmed, and outside the tall windows "
    "snow began to fall softly on the empty square.",
]
VOICES = [("en-us", 150), ("en-us+f3", 135), ("en-us+m3", 175), ("en-gb", 160),
          ("en-us+f2", 190), ("en-us+m5", 145)]


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str
    seconds: float


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise SystemExit(f"{tool} is not installed (apt-get install espeak-ng sox)")
    return exe


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def speak(text: str, path: Path, voice: str, speed: int) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.wav")
        subprocess.run([need("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(tmp), text],
                       check=True)
        tmp.replace(path)
    return path


def sox(*args: str | Path) -> None:
    subprocess.run([need("sox"), *map(str, args)], check=True)


def concat(parts: list[Path], out: Path) -> Path:
    """Join WAV files with sox (same rate and channels, as espeak-ng writes them)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part.wav")
        sox(*parts, tmp)
        tmp.replace(out)
    return out


def build_clips(cache: Path, min_seconds: float, per_clip: int = 2) -> list[Clip]:
    """Clips of ``per_clip`` consecutive paragraphs, each paragraph in its own voice and speed,
    until the total reaches ``min_seconds``. Rounds rotate the voices, so every round sounds
    different; everything is cached by content."""
    per_clip = max(1, min(per_clip, len(PARAGRAPHS)))
    clips: list[Clip] = []
    total, k = 0.0, 0
    while total < min_seconds:
        rnd, slot = divmod(k, len(PARAGRAPHS) // per_clip)
        idx = [slot * per_clip + j for j in range(per_clip)]
        parts, texts = [], []
        for n, i in enumerate(idx):
            voice, speed = VOICES[(i + rnd * 2 + n) % len(VOICES)]
            text = PARAGRAPHS[i]
            tag = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:12]
            parts.append(speak(text, cache / "parts" / f"{tag}.wav", voice, speed))
            texts.append(text)
        tag = hashlib.sha1("|".join(p.name for p in parts).encode()).hexdigest()[:12]
        out = concat(parts, cache / "clips" / f"clip{k:03d}_{tag}.wav")
        clips.append(Clip(out, " ".join(texts), wav_seconds(out)))
        total += clips[-1].seconds
        k += 1
    return clips


def normalize(text: str) -> str:
    """Lowercase words only: punctuation dropped, hyphens split, apostrophes kept."""
    text = text.lower().replace("-", " ")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())
