#!/usr/bin/env python3
"""Scores speech received against what was sent: PESQ (ITU-T P.862.2, wideband, the `pesq`
package) and STOI (`pystoi`), from PyPI, in the test venv (target/interop-venv).

  speech_score.py SENT.raw RECEIVED.raw
  speech_score.py --loop SENT.raw RECEIVED.raw

Both raw S16 mono at 48 kHz, on one clock (room.py --save writes them: far_mic.raw is what
the far end said, speaker.raw what the door played). With `--loop`, SENT is one period of
speech the sender said over and over from a point unknown (a browser playing a file as its
microphone): what was received is first trimmed to where it sounds, and found in the loop. The received speech lags, and not by
one fixed amount: where a receiver conceals a lost packet its playout shifts by a few
milliseconds (seen: +20 ms over 20 s at 10 % loss). So the speech is scored in SEGMENT-long
pieces, each found in what was received by cross-correlation (near the lag of the whole),
taken to 16 kHz and scored on its own; the scores are averaged. Prints one JSON object.
"""
import json
import sys

import numpy as np
from pesq import pesq
from pystoi import stoi
from scipy.signal import correlate, resample_poly

RATE = 48000
MAX_LAG = 2.0  # seconds: the whole received stream's lag, at most
SEGMENT = 4.0  # seconds
SHIFT = 0.1  # seconds: how far a segment's own lag may stray from the whole's
LEAD = 0.5  # seconds: `--loop` lays the loop this far ahead of what was received


def load(path):
    return np.fromfile(path, dtype="<i2").astype(np.float64) / 32768


def lag_of(ref, received, lo, hi):
    """The lag (samples, in lo..hi) at which `received` best matches `ref`, and that
    normalised correlation."""
    window = received[lo:hi + len(ref)]
    corr = np.abs(correlate(window, ref, mode="valid", method="fft"))
    k = int(np.argmax(corr))
    energy = np.sqrt(np.sum(ref ** 2) * np.sum(window[k:k + len(ref)] ** 2)) + 1e-12
    return lo + k, float(corr[k] / energy)


def unloop(period, received):
    """`received` from its first sound to its last, and the loop of `period` laid under it
    so that the received speech lags it by LEAD seconds (within MAX_LAG, as on one clock)."""
    loud = np.flatnonzero(np.abs(received) > 0.01)
    if len(loud) == 0:
        sys.exit("speech_score.py: nothing but silence received")
    lead = int(LEAD * RATE)
    begin = max(0, loud[0] - lead)
    received = received[begin:loud[-1]]
    # Where the first received seconds of speech are in the loop (two periods: any phase).
    piece = received[loud[0] - begin:loud[0] - begin + int(SEGMENT * RATE)]
    phase, _ = lag_of(piece, np.tile(period, 2), 0, len(period))
    offset = (phase - (loud[0] - begin) + lead) % len(period)
    reps = (offset + len(received)) // len(period) + 1
    return np.tile(period, reps)[offset:offset + len(received)], received


def main():
    args = [a for a in sys.argv[1:] if a != "--loop"]
    sent, received = load(args[0]), load(args[1])
    if "--loop" in sys.argv[1:]:
        sent, received = unloop(sent, received)
    n = min(len(sent), len(received))
    if n <= (SEGMENT + 2 * MAX_LAG) * RATE:
        sys.exit("speech_score.py: %.1f s recorded, too short to score" % (n / RATE))
    whole, correlation = lag_of(sent[: n - int(MAX_LAG * RATE)], received, 0, int(MAX_LAG * RATE))
    seg, shift = int(SEGMENT * RATE), int(SHIFT * RATE)
    pesqs, stois, lags = [], [], []
    for start in range(0, n - seg - whole - shift, seg):
        ref = sent[start:start + seg]
        if np.sqrt(np.mean(ref ** 2)) < 1e-3:
            continue  # silence: nothing to score
        lo = max(0, start + whole - shift)
        lag, _ = lag_of(ref, received, lo, start + whole + shift)
        deg = received[lag:lag + seg]
        r16, d16 = resample_poly(ref, 1, 3), resample_poly(deg, 1, 3)
        pesqs.append(float(pesq(16000, r16, d16, "wb")))
        stois.append(float(stoi(r16, d16, 16000, extended=False)))
        lags.append(round((lag - start) * 1000 / RATE, 1))
    if not pesqs:
        sys.exit("speech_score.py: nothing but silence to score")
    print(json.dumps({
        "pesq_wb": round(float(np.mean(pesqs)), 2),
        "stoi": round(float(np.mean(stois)), 3),
        "segments": len(pesqs),
        "pesq_segments": [round(p, 2) for p in pesqs],
        "lag_ms": round(whole * 1000 / RATE, 1),
        "segment_lags_ms": lags,
        "correlation": round(correlation, 2),
    }))


if __name__ == "__main__":
    main()
