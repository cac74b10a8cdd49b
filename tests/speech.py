"""Real speech for tests: espeak-ng speaks known sentences to WAV files.

A check against the spoken text uses ``PARAGRAPH`` (61 words), not one sentence: the int8
kernels differ between CPUs, and one misheard word in a nine-word sentence is already 11%."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet at the library on Monday morning to review the project plan.",
    "The weather today is sunny with a light breeze from the west.",
    "Remember to water the plants before you leave for your holiday.",
]
PARAGRAPH = " ".join(SENTENCES)
ALSA = Path("/usr/share/sounds/alsa")


def speak(text: str, path: Path, *, speed: int = 150) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-v", "en-us", "-s", str(speed), "-w", str(path), text], check=True)
    return path
