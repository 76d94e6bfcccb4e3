#!/usr/bin/env python3
"""A WHIP endpoint (RFC 9725's ingest side) built on aiortc, an independent WebRTC stack:
POST /whip with an SDP offer -> 201, Location /whip/N and the answer; DELETE /whip/N ends it.
Counts the video frames it decodes and writes a JSON report to --report twice a second, until
--seconds end (or it is killed: the tests kill it to play an endpoint that vanished).
"""

import argparse
import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiortc import RTCPeerConnection, RTCSessionDescription


class Endpoint:
    def __init__(self, args, loop):
        self.args = args
        self.loop = loop
        self.sessions = {}
        self.next_id = 0
        self.report = {"posts": 0, "refused": 0, "deletes": 0, "video_frames": 0,
                       "audio_frames": 0, "patches": 0, "trickled_candidates": 0,
                       "trickled_end": 0}

    async def answer(self, offer):
        pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.consume(track))

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.next_id += 1
        self.sessions[str(self.next_id)] = pc
        return str(self.next_id), pc.localDescription.sdp

    async def consume(self, track):
        key = "video_frames" if track.kind == "video" else "audio_frames"
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.report[key] += 1

    async def delete(self, session):
        pc = self.sessions.pop(session, None)
        if pc is None:
            return False
        await pc.close()
        return True

    def write(self):
        with open(self.args.report, "w") as f:
            json.dump(self.report, f)


def handler(endpoint):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def authorized(self):
            if not endpoint.args.token:
                return True
            if self.headers.get("Authorization") == "Bearer " + endpoint.args.token:
                return True
            endpoint.report["refused"] += 1
            self.reply(401, b"bad token\n")
            return False

        def do_POST(self):
            if self.path != "/whip" or not self.authorized():
                return
            length = int(self.headers.get("Content-Length", "0"))
            offer = self.rfile.read(length).decode()
            endpoint.report["posts"] += 1
            future = asyncio.run_coroutine_threadsafe(endpoint.answer(offer), endpoint.loop)
            session, answer = future.result(timeout=10)
            self.reply(201, answer.encode(), [("Content-Type", "application/sdp"),
                                             ("Location", "/whip/" + session)])

        def do_PATCH(self):
            # Trickled candidates (RFC 8840 fragments): counted; aiortc cannot add candidates
            # after its answer, and needs none here (the offer had them).
            if not self.authorized():
                return
            length = int(self.headers.get("Content-Length", "0"))
            fragment = self.rfile.read(length).decode()
            endpoint.report["patches"] += 1
            endpoint.report["trickled_candidates"] += fragment.count("a=candidate:")
            endpoint.report["trickled_end"] += fragment.count("a=end-of-candidates")
            self.reply(204)

        def do_DELETE(self):
            if not self.authorized():
                return
            session = self.path.rsplit("/", 1)[-1]
            future = asyncio.run_coroutine_threadsafe(endpoint.delete(session), endpoint.loop)
            if future.result(timeout=10):
                endpoint.report["deletes"] += 1
                self.reply(200)
            else:
                self.reply(404)

    return Handler


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    endpoint = Endpoint(args, asyncio.get_running_loop())
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(endpoint))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        endpoint.write()
        await asyncio.sleep(0.5)
    endpoint.write()
    server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
