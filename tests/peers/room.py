#!/usr/bin/python3
"""A room for the echo measurements: a door station's speaker heard by its own microphone.

One process, one clock, four userspace ALSA streams (the `file` plugin, through fifos):

  far mic        the far end's microphone: speech, on a schedule (written here)
  door speaker   what the door plays: the far end's speech, after the call (read here)
  door mic       the door's microphone: the speaker's echo through the room (a delay, an
                 attenuation, a short reverberant tail, the speaker's clock drifting against
                 the microphone's), plus the near end's own speech on a schedule, plus a faint
                 noise floor (written here)
  far speaker    what the far end hears of the door: the microphone after the door's echo
                 canceller and the call (read and recorded here)

Every stream moves 10 ms per tick of this process's clock, so the four are aligned up to
the pipelines' own latencies, which the analysis finds by cross-correlation. The schedule,
in seconds after the call is heard both ways (T0):

   0 – FAR_END      far end talks alone: the canceller converges, then its steady ERLE
   FAR_END – NEAR_END  near end talks alone: the level of near-end speech through the door
   NEAR_END – DOUBLE_END  both talk (double talk): how much of the near end survives
   DOUBLE_END – END  far end alone again

At the end it prints one JSON object: ERLE after convergence, convergence time, the near-end
level change in double talk, and what it saw of the streams (underruns, drops).

`--scenario near` measures the door's noise suppression and gain control instead: no far end
(after the call is heard), a fan's noise in the door's room (`--snr-db` below the near end's
speech; none without it) alone for NEAR_FROM seconds, then the near end talks (at
`--near-dbfs`) over it until NEAR_UNTIL. It prints the levels of speech and noise the door
heard and sent, and the SNR of each.

`--scenario speech` is for speech under loss: the far end talks until SPEECH_UNTIL, the door
only listens; `--save` keeps what was said and what the door played (speech_score.py scores
them).
Needs numpy (Debian's python3-numpy) and espeak-ng.
"""
import argparse
import errno
import fcntl
import io
import json
import os
import subprocess
import sys
import time
import wave

import numpy as np

RATE = 48000
TICK = 480  # samples: 10 ms
F_SETPIPE_SZ = 1031
START = time.monotonic()

FAR_END, NEAR_END, DOUBLE_END, END = 12.0, 18.0, 26.0, 30.0
# The `near` scenario: noise alone, then the near end over it.
NEAR_FROM, NEAR_UNTIL = 4.0, 16.0
# The `speech` scenario: the far end talks this long.
SPEECH_UNTIL = 20.0
# What the far end hears lags the schedule (the door's capture, the call, the far end's
# playout): recorded this much past END so that every window has its whole lagged stretch.
TAIL = 1.0
# The near end alone is judged from this long after the far end stops (the echo's tail in a
# 200 ms room: the door's playout, the room, the reverberation).
SETTLE = 0.8

FAR_TEXT = ("A visitor is waiting at the front door with a parcel for you. "
            "Please come down and sign for it, the courier cannot wait much longer. ")
NEAR_TEXT = ("Hello, who is there? I am coming, just give me a minute to find my keys. "
             "Leave it by the step if you are in a hurry. ")


def speech(text, voice, seconds, level_dbfs):
    """espeak-ng's speech of `text`, repeated to `seconds` (None: said once), at 48 kHz,
    active-speech RMS at `level_dbfs`."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    n = int(len(x) * RATE / rate)
    x = np.interp(np.arange(n) * rate / RATE, np.arange(len(x)), x)
    if seconds is not None:
        reps = int(np.ceil(seconds * RATE / len(x)))
        x = np.tile(x, reps)[: int(seconds * RATE)]
    active = x[np.abs(x) > 0.01 * np.max(np.abs(x))]
    rms = np.sqrt(np.mean(active ** 2))
    return x * (32768 * 10 ** (level_dbfs / 20) / rms)


class Reader:
    """The read end of a speaker's fifo, played as a sound card plays: from a ring buffer of
    its own (RING ms) that it keeps topped up from the fifo, at this clock's pace, starting
    (and, after running dry, starting again) once START ms are in it. It reads no more than
    the ring has room for, so the small pipe backpressures the speaker.

    (The `file` plugin writes when the application writes, not when the sound is played, so
    the fifo carries every hiccup of the pipeline's pushes. A card's buffer absorbs them;
    played straight from the fifo, each one would shift the speaker's sound a little later,
    an echo path a canceller would have to find again every fraction of a second.)"""

    RING = 0.1
    START = 0.04

    def __init__(self, path, channels):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self.fd, F_SETPIPE_SZ, 4096)
        except OSError:
            pass
        self.frame = 2 * channels
        self.channels = channels
        self.partial = b""
        self.ring = np.zeros(0)
        self.playing = False
        self.underruns = 0
        self.underrun_at = []
        self.heard = False

    def read(self, samples):
        """Up to `samples` frames, mixed to mono (fewer if fewer came)."""
        want = samples * self.frame - len(self.partial)
        got = b""
        if want > 0:
            try:
                got = os.read(self.fd, want)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
        data = self.partial + got
        whole = len(data) - len(data) % self.frame
        data, self.partial = data[:whole], data[whole:]
        if data:
            self.heard = True
        x = np.frombuffer(data, dtype="<i2").astype(np.float64)
        return x.reshape(-1, self.channels).mean(axis=1)

    def tick(self, samples=TICK):
        """Exactly `samples` frames played: silence while it has not started, or ran dry."""
        room = int(self.RING * RATE) - len(self.ring)
        if room > 0:
            self.ring = np.concatenate([self.ring, self.read(room)])
        if not self.playing and len(self.ring) >= int(self.START * RATE):
            self.playing = True
        if not self.playing:
            return np.zeros(samples)
        x, self.ring = self.ring[:samples], self.ring[samples:]
        if len(x) < samples:
            self.playing = False
            self.underruns += 1
            if len(self.underrun_at) < 40:
                self.underrun_at.append(round(time.monotonic() - START, 2))
            x = np.concatenate([x, np.zeros(samples - len(x))])
        return x


class Writer:
    """The write end of a microphone's fifo: 10 ms per tick; dropped when nobody reads or
    the reader is behind (the microphone's clock is this one). PREFILL ticks of silence go
    first, so that the fifo always holds what the microphone reads next: the `file` plugin
    hands the application only what one read() gets, and a read that finds the fifo short
    would deliver the microphone's samples late."""

    PREFILL = 4

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.dropped = 0

    def tick(self, samples):
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                return
            try:
                os.write(self.fd, bytes(2 * TICK * self.PREFILL))
            except BlockingIOError:
                pass
        data = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            self.dropped += 1
        except BrokenPipeError:
            os.close(self.fd)
            self.fd = None


def fan(seconds, level_dbfs):
    """A fan's noise: broadband noise tilted to the low end (one-pole low-pass mixed with a
    little white) and the motor's 120 Hz hum with its harmonics, at `level_dbfs` RMS."""
    rng = np.random.default_rng(3)
    n = int(seconds * RATE)
    white = rng.normal(0, 1, n)
    low = np.empty(n)
    acc = 0.0
    for i, w in enumerate(white):  # a one-pole low-pass
        acc = 0.97 * acc + 0.03 * w
        low[i] = acc
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in (1, 2, 3))
    x = low / np.std(low) + 0.3 * white + 0.2 * hum
    return x * (32768 * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(x ** 2)))


def impulse(delay_ms, gain_db, reverb):
    """The room's echo path: (delay in samples, gain) taps."""
    g = 10 ** (gain_db / 20)
    d = int(delay_ms * RATE / 1000)
    taps = [(d, g)]
    if reverb:
        # A short tail: reflections every ~3.7 ms for 60 ms, decaying 40 dB over it.
        rng = np.random.default_rng(7)
        for k in range(1, 17):
            taps.append((d + int(k * 3.7 * RATE / 1000), g * 0.75 * 10 ** (-2.5 * k / 16)
                         * rng.choice([-1.0, 1.0])))
    return taps


# What the far end hears may lag the door's microphone by up to this much.
MAX_LAG = 1.0


def best_lag(ref, later):
    """The lag (samples) at which `later` best matches `ref`, and that normalised correlation:
    every lag up to len(later) - len(ref), at sample resolution (speech's correlation peak is
    narrower than a millisecond)."""
    n_lags = len(later) - len(ref) + 1
    size = 1 << int(np.ceil(np.log2(len(later) + len(ref))))
    dots = np.fft.irfft(np.fft.rfft(later, size) * np.conj(np.fft.rfft(ref, size)), size)[:n_lags]
    energy = np.concatenate([[0.0], np.cumsum(later ** 2)])
    norms = np.sqrt(energy[len(ref):len(ref) + n_lags] - energy[:n_lags]) * np.linalg.norm(ref)
    corr = np.abs(dots) / (norms + 1e-9)
    lag = int(np.argmax(corr))
    return lag, float(corr[lag])


def power(x):
    return float(np.mean(x ** 2)) + 1e-9


def db(ratio):
    return float(10 * np.log10(ratio))


def analyse(rec, t0):
    """The measures, from the recorded streams (numpy arrays on this clock)."""
    far_mic, echo, near, sent = rec["far_mic"], rec["echo"], rec["near"], rec["sent"]
    s = lambda t: t0 + int(t * RATE)  # noqa: E731
    # What the far end hears lags the door's microphone by the door's capture, the call and
    # the far end's playout: found on the near end's speech alone (it passes either way).
    lo, hi = s(FAR_END + SETTLE), s(NEAR_END - 0.5)
    lag, best = best_lag(near[lo:hi], sent[lo:hi + int(MAX_LAG * RATE)])
    out = lambda a, b: sent[s(a) + lag: s(b) + lag]  # noqa: E731
    mic = lambda x, a, b: x[s(a): s(b)]  # noqa: E731

    # ERLE in 0.5 s windows while the far end talks alone (windows with echo only).
    series = []
    t = 0.0
    while t + 0.5 <= FAR_END:
        e = mic(echo, t, t + 0.5)
        if power(e) > power(mic(echo, 2, FAR_END)) * 0.1:
            series.append((t, db(power(e) / power(out(t, t + 0.5)))))
        t += 0.5
    steady = db(power(mic(echo, 4, FAR_END)) / power(out(4, FAR_END)))
    # Converged: the end of the first window within 3 dB of the steady ERLE or at 25 dB (the
    # target), if the steady ERLE is worth the name (a canceller that removes next to
    # nothing "converges" at once).
    converged = next((t + 0.5 for t, v in series if v >= min(steady - 3, 25)), None) \
        if steady >= 10 else None
    # The near end alone, then in double talk: how much of it gets through. In double talk
    # the residual echo (at the steady ERLE) is taken out of what was sent.
    ns = db(power(out(FAR_END + SETTLE, NEAR_END)) / power(mic(near, FAR_END + SETTLE, NEAR_END)))
    residual = power(mic(echo, NEAR_END, DOUBLE_END)) / 10 ** (steady / 10)
    dt_sent = max(power(out(NEAR_END, DOUBLE_END)) - residual, 1e-9)
    dt = db(dt_sent / power(mic(near, NEAR_END, DOUBLE_END)))
    after = db(power(mic(echo, DOUBLE_END + 1, END)) / power(out(DOUBLE_END + 1, END)))
    return {
        "erle_db": round(steady, 1),
        "converged_s": converged,
        "erle_series": [[t, round(v, 1)] for t, v in series],
        "near_end_single_talk_db": round(ns, 1),
        "near_end_double_talk_db": round(dt, 1),
        "double_talk_change_db": round(dt - ns, 1),
        "erle_after_double_talk_db": round(after, 1),
        "echo_dbfs": round(db(power(mic(echo, 2, FAR_END)) / 32768 ** 2), 1),
        "near_dbfs": round(db(power(mic(near, FAR_END, NEAR_END)) / 32768 ** 2), 1),
        "lag_ms": round(lag * 1000 / RATE, 1),
        "lag_correlation": round(best, 2),
    }


def analyse_near(rec, t0):
    """The `near` scenario's measures: what the door sent of its noise alone, and of the near
    end's speech over it. The SNR sent is the speech stretch's power over the noise-alone
    stretch's (minus the latter); the SNR heard is exact (the room knows both parts)."""
    near, noise, sent = rec["near"], rec["noise"], rec["sent"]
    s = lambda t: t0 + int(t * RATE)  # noqa: E731
    lo, hi = s(NEAR_FROM + 1), s(NEAR_UNTIL - 1)
    lag, best = best_lag(near[lo:hi], sent[lo:hi + int(MAX_LAG * RATE)])
    out = lambda a, b: sent[s(a) + lag: s(b) + lag]  # noqa: E731
    mic = lambda x, a, b: x[s(a): s(b)]  # noqa: E731
    dbfs = lambda p: round(db(p / 32768 ** 2), 1)  # noqa: E731
    speech_from = NEAR_FROM + 2  # noise suppression and gain control settle on speech
    noise_in = power(mic(noise, 2, NEAR_FROM))
    noise_out = power(out(2, NEAR_FROM))
    speech_in = power(mic(near, speech_from, NEAR_UNTIL))
    both_out = power(out(speech_from, NEAR_UNTIL))
    result = {
        "near_in_dbfs": dbfs(speech_in),
        "sent_dbfs": dbfs(both_out),
        "noise_in_dbfs": dbfs(noise_in),
        "noise_sent_dbfs": dbfs(noise_out),
        "lag_ms": round(lag * 1000 / RATE, 1),
        "lag_correlation": round(best, 2),
    }
    if noise_in > 1:
        result["snr_in_db"] = round(db(speech_in / noise_in), 1)
        result["snr_sent_db"] = round(db(max(both_out - noise_out, 1e-9) / noise_out), 1)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True, help="where the fifos are")
    p.add_argument("--delay-ms", type=float, default=80)
    p.add_argument("--gain-db", type=float, default=-6)
    p.add_argument("--reverb", action="store_true")
    p.add_argument("--drift-ppm", type=float, default=0)
    p.add_argument("--wait", type=float, default=30, help="seconds to wait for the call")
    p.add_argument("--save", help="write the recorded streams here (raw S16 mono)")
    p.add_argument("--scenario", choices=["echo", "near", "speech"], default="echo")
    p.add_argument("--near-dbfs", type=float, default=-26)
    p.add_argument("--snr-db", type=float, help="a fan's noise this far below the near end")
    a = p.parse_args()
    echo_scenario = a.scenario == "echo"
    until = {"echo": END, "near": NEAR_UNTIL, "speech": SPEECH_UNTIL}[a.scenario]

    far = speech(FAR_TEXT, "en-us", END, -20)
    near = speech(NEAR_TEXT, "en-gb+f3", END, a.near_dbfs)
    noise = fan(until + TAIL + 2, a.near_dbfs - a.snr_db) if a.snr_db is not None \
        else np.zeros(int((until + TAIL + 2) * RATE))
    taps = impulse(a.delay_ms, a.gain_db, a.reverb)
    hist_len = max(d for d, _ in taps) + 4 * TICK
    hist = np.zeros(hist_len)
    ratio = 1 + a.drift_ppm * 1e-6  # the speaker's samples per microphone sample
    spk_buf = np.zeros(0)
    spk_pos = 0.0
    rng = np.random.default_rng(1)

    d = a.dir
    far_mic = Writer(os.path.join(d, "far-mic.fifo"))
    door_mic = Writer(os.path.join(d, "door-mic.fifo"))
    door_spk = Reader(os.path.join(d, "door-speaker.fifo"), 2)
    far_spk = Reader(os.path.join(d, "far-speaker.fifo"), 2)

    rec = {k: [] for k in ("far_mic", "echo", "near", "noise", "sent", "speaker")}
    start = time.monotonic()
    tick = 0
    t0 = None  # tick index of T0
    deadline = start + a.wait
    while True:
        # Ticks since T0 (None, or negative in the second before it: the pre-roll).
        now_tick = tick - t0 if t0 is not None else None
        if now_tick is not None and now_tick < 0:
            now_tick = None
        if now_tick is not None and now_tick >= int((until + TAIL) * 100):
            break
        if t0 is None and time.monotonic() > deadline:
            print(json.dumps({"error": "no call heard both ways within %.0f s" % a.wait}))
            sys.exit(1)
        # The far end talks per the schedule, and is silent before T0: the canceller must not
        # learn the room before the measurement starts (a call is heard both ways by its
        # bytes: the encoders send silence too).
        if now_tick is None:
            f = np.zeros(TICK)
        else:
            sec = now_tick / 100
            on = a.scenario == "speech" \
                or (echo_scenario and (sec < FAR_END or NEAR_END <= sec < END))
            f = far[now_tick * TICK:(now_tick + 1) * TICK] if on else np.zeros(TICK)
        far_mic.tick(f)
        # The door's speaker, resampled to the microphone's clock (the drift): what it
        # plays this tick, read as it plays (silence where it had nothing).
        need = int(np.ceil(spk_pos + TICK * ratio)) + 1
        if len(spk_buf) < need:
            spk_buf = np.concatenate([spk_buf, door_spk.tick(need - len(spk_buf))])
        pos = spk_pos + np.arange(TICK) * ratio
        played = np.interp(pos, np.arange(len(spk_buf)), spk_buf)
        spk_pos += TICK * ratio
        used = int(spk_pos)
        spk_buf, spk_pos = spk_buf[used:], spk_pos - used
        hist = np.concatenate([hist[TICK:], played])
        echo = np.zeros(TICK)
        for delay, g in taps:
            end = hist_len - delay
            echo += g * hist[end - TICK:end]
        if now_tick is None:
            n = np.zeros(TICK)
            fan_now = np.zeros(TICK)
        else:
            sec = now_tick / 100
            talks = FAR_END <= sec < DOUBLE_END if echo_scenario \
                else a.scenario == "near" and NEAR_FROM <= sec < until
            n = near[now_tick * TICK:(now_tick + 1) * TICK] if talks else np.zeros(TICK)
            fan_now = noise[now_tick * TICK:(now_tick + 1) * TICK]
        floor = rng.normal(0, 32768 * 10 ** (-70 / 20), TICK)
        door_mic.tick(echo + n + fan_now + floor)
        sent = far_spk.tick()
        if t0 is None and door_spk.heard and far_spk.heard:
            t0 = tick + 100  # a second to settle
        if t0 is not None:
            rec["far_mic"].append(f)
            rec["echo"].append(echo)
            rec["near"].append(n)
            rec["noise"].append(fan_now)
            rec["sent"].append(sent)
            rec["speaker"].append(played)
        tick += 1
        ahead = start + tick * 0.01 - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)

    # Recording began a second before T0 (when the call was first heard both ways).
    streams = {k: np.concatenate(v) for k, v in rec.items()}
    if a.scenario == "speech":
        result = {"seconds": round(len(streams["speaker"]) / RATE, 1)}
    else:
        result = (analyse if echo_scenario else analyse_near)(streams, 100 * TICK)
    result.update({
        "delay_ms": a.delay_ms, "gain_db": a.gain_db, "reverb": a.reverb,
        "drift_ppm": a.drift_ppm,
        "door_speaker_underruns": door_spk.underruns, "door_speaker_underrun_at": door_spk.underrun_at,
        "t0_s": round(t0 / 100, 2), "far_speaker_underruns": far_spk.underruns,
        "door_mic_dropped": door_mic.dropped, "far_mic_dropped": far_mic.dropped,
    })
    if a.save:
        os.makedirs(a.save, exist_ok=True)
        for k, v in streams.items():
            np.clip(np.round(v), -32768, 32767).astype("<i2").tofile(os.path.join(a.save, k + ".raw"))
    # Below this the near end's speech did not come through recognisably: the measures would
    # be of misaligned streams. Over a fan's noise the codec keeps the noise's spectrum, not
    # its waveform, and the speech's correlation falls (0.47 at 10 dB SNR, aligned).
    if result.get("lag_correlation", 1.0) < (0.5 if echo_scenario else 0.3):
        print(json.dumps({"error": "what the far end heard does not match the door's "
                          "microphone (correlation %.2f): %s" % (result["lag_correlation"],
                                                                json.dumps(result))}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
