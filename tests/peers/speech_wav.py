#!/usr/bin/python3
"""The far end's speech as a file, for a browser to say (Chromium's
`--use-file-for-fake-audio-capture`, which plays it over and over): room.py's far-end text
(espeak-ng) said whole as many times as make about SECONDS (so that the file loops on a
sentence's end, and any repetition of it lines up with any other), 48 kHz mono S16, active
speech at -20 dBFS (as room.py's far end).

  speech_wav.py OUT SECONDS      writes OUT.wav and OUT.raw (the same samples, raw)

Needs numpy (Debian's python3-numpy) and espeak-ng.
"""
import os
import sys
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import room  # noqa: E402  (its speech(), and nothing it runs)


def main():
    out, seconds = sys.argv[1], float(sys.argv[2])
    once = room.speech(room.FAR_TEXT, "en-us", None, -20)
    x = np.tile(once, max(1, round(seconds * room.RATE / len(once))))
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2")
    with wave.open(out + ".wav", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(room.RATE)
        w.writeframes(pcm.tobytes())
    pcm.tofile(out + ".raw")


if __name__ == "__main__":
    main()
