#!/usr/bin/env python3
"""Real-time pacing for the tests' userspace ALSA devices.

ALSA's `null` PCM is unpaced: a speaker on it takes samples as fast as they come (~265 MB/s
measured) and a microphone on it records silence ~190x faster than real time, so a pipeline
on either spins a core and its clock races. The tests' devices go through ALSA's `file`
plugin instead, paced by this script:

  speaker OUT RATE      read what the speaker plays from stdin (the file plugin's pipe) and
                        append it to OUT at RATE bytes/s; ends when the pipe closes.
  mic FIFO RATE SECS    write a 440 Hz tone (S16_LE mono 48 kHz) into FIFO (the file plugin's
                        `infile`) at RATE bytes/s, each time the microphone opens it, for at
                        most SECS seconds.
"""
import errno
import fcntl
import math
import os
import struct
import sys
import time


def pace(start, done, rate):
    ahead = start + done / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


def speaker(out_path, rate):
    with open(out_path, "ab", buffering=0) as out:
        start, done = time.monotonic(), 0
        while True:
            chunk = sys.stdin.buffer.read(max(rate // 100, 2))
            if not chunk:
                return
            out.write(chunk)
            done += len(chunk)
            pace(start, done, rate)


def mic(fifo, rate, seconds):
    tone = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 48000)))
        for i in range(480)
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            # Non-blocking until a reader is there, so the deadline holds.
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            time.sleep(0.02)
            continue
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        start, done = time.monotonic(), 0
        try:
            while time.monotonic() < deadline:
                done += os.write(fd, tone)
                pace(start, done, rate)
        except BrokenPipeError:
            pass  # the microphone closed: wait for the next open
        finally:
            os.close(fd)


if __name__ == "__main__":
    if sys.argv[1] == "speaker":
        speaker(sys.argv[2], int(sys.argv[3]))
    else:
        mic(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
