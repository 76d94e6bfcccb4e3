#!/usr/bin/env python3
"""Opens a door when a caller asks, through webrtcd's DataChannel bridge.

Connects to the bridge's Unix socket ([bridge] socket in webrtcd.toml), reads one JSON line
per DataChannel message a peer sent ({"session", "peer", "data"}), and on a message whose
data is {"type": "open"} runs the door command (a GPIO line, a relay board, a smart lock's
CLI), then answers on the same call's DataChannel with {"type": "opened"} (or
{"type": "error", "message": ...}). Everything else is ignored.

    door-relay.py --socket /run/webrtcd/bridge.sock --command "gpioset gpiochip0 17=1" \
        --allow kiosk-hallway --allow kiosk-office

Only the peers named with --allow may open (without --allow: any peer with a call, which on
a camera that answers everyone includes viewers: name the peers).

Reconnects (every 2 s) when the daemon restarts. Standard library only.
"""

import argparse
import json
import shlex
import socket
import subprocess
import sys
import time


def run_door(command, timeout):
    """Runs the door command; None when it worked, else why not."""
    if not command:
        return None
    try:
        done = subprocess.run(shlex.split(command), timeout=timeout, capture_output=True)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if done.returncode != 0:
        return f"exit status {done.returncode}"
    return None


def reply(sock, session, data):
    line = json.dumps({"session": session, "data": data}) + "\n"
    sock.sendall(line.encode())


def serve(sock, args):
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
                request = json.loads(message["data"])
            except (ValueError, KeyError, TypeError):
                continue  # not JSON, or not for us
            if not isinstance(request, dict) or request.get("type") != "open":
                continue
            session = message.get("session")
            if args.allow and message.get("peer") not in args.allow:
                print(f"open refused to {message.get('peer')}", file=sys.stderr, flush=True)
                reply(sock, session, {"type": "error", "message": "not allowed"})
                continue
            print(f"open requested by {message.get('peer')} on {session}", flush=True)
            failed = run_door(args.command, args.timeout)
            if failed:
                print(f"the door did not open: {failed}", file=sys.stderr, flush=True)
                reply(sock, session, {"type": "error", "message": "the door did not open"})
            else:
                reply(sock, session, {"type": "opened"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="/run/webrtcd/bridge.sock")
    parser.add_argument("--command", default="", help="what opens the door (none: only say so)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds the command may take")
    parser.add_argument("--once", action="store_true", help="exit when the daemon goes away")
    parser.add_argument("--allow", action="append", default=[], metavar="PEER",
                        help="a peer that may open (repeatable; none: any peer)")
    args = parser.parse_args()
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(args.socket)
                print(f"connected to {args.socket}", flush=True)
                serve(sock, args)
        except OSError as err:
            print(f"bridge: {err}", file=sys.stderr, flush=True)
        if args.once:
            return
        time.sleep(2)


if __name__ == "__main__":
    main()
