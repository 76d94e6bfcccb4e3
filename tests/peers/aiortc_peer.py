#!/usr/bin/env python3
"""A protocol-v1 peer built on aiortc, an independent WebRTC stack whose DTLS offers only
ECDHE-ECDSA cipher suites and which never trickles (its candidates are inside its SDP).

Calls PEER (--call) or answers the first call it gets; counts decoded video frames, audio
frames and DataChannel pongs; writes a JSON report to --report when it has seen enough (or
when --seconds run out) and exits 0 if the call worked.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request

import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp


class Peer:
    def __init__(self, args):
        self.args = args
        self.ws = None
        self.pc = None
        self.session = None
        self.remote = None
        self.channel = None
        self.pending = []
        self.report = {"video_frames": 0, "audio_frames": 0, "pongs": 0, "pings_answered": 0,
                       "connected": False, "channel_created_locally": False,
                       "channel_received": False, "errors": []}
        # When each video frame was decoded: --stay reports the rate of the last --window s.
        self.video_times = []

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    def new_pc(self):
        pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.consume(track))

        @pc.on("datachannel")
        def on_datachannel(channel):
            self.report["channel_received"] = True
            self.use_channel(channel)

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState == "connected":
                self.report["connected"] = True
            if pc.connectionState == "failed":
                self.report["errors"].append("connection failed")

        self.pc = pc
        return pc

    async def consume(self, track):
        key = "video_frames" if track.kind == "video" else "audio_frames"
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.report[key] += 1
            if track.kind == "video":
                self.video_times.append(time.monotonic())
                self.report["video_size"] = [frame.width, frame.height]
                if self.report[key] % 15 == 1:
                    # The picture's mean colour (which camera it shows), now and then.
                    rgb = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
                    self.report["video_rgb"] = [round(float(c)) for c in rgb]

    def use_channel(self, channel):
        self.channel = channel

        @channel.on("message")
        def on_message(message):
            try:
                msg = json.loads(message)
            except (TypeError, ValueError):
                return
            if msg.get("type") == "ping":
                # A ping can arrive just before aiortc marks its own channel open; sending
                # then raises and would tear down the whole DTLS transport. The next ping,
                # a second later, gets its pong.
                if channel.readyState == "open":
                    channel.send(json.dumps({"type": "pong", "id": msg.get("id")}))
                    self.report["pings_answered"] += 1
            elif msg.get("type") == "pong":
                self.report["pongs"] += 1

    async def pinger(self):
        n = 0
        while True:
            await asyncio.sleep(0.5)
            if self.channel is not None and self.channel.readyState == "open":
                n += 1
                self.channel.send(json.dumps({"type": "ping", "id": n}))

    async def call(self, peer):
        self.session = f"{self.args.id}-{int(time.time() * 1000)}"
        self.remote = peer
        call = {"type": "call", "to": peer, "session": self.session}
        if self.args.camera:
            call["camera"] = self.args.camera
        await self.send(call)
        pc = self.new_pc()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        self.use_channel(pc.createDataChannel("chat"))
        self.report["channel_created_locally"] = True
        await pc.setLocalDescription(await pc.createOffer())
        await self.send({"type": "offer", "to": peer, "session": self.session,
                         "sdp": pc.localDescription.sdp})

    async def on_message(self, msg):
        kind = msg.get("type")
        if kind == "registered" and self.args.call:
            if self.args.call in msg.get("peers", []):
                await self.call(self.args.call)
        elif kind == "peer-joined" and self.args.call and self.session is None:
            if msg.get("id") == self.args.call:
                await self.call(self.args.call)
        elif kind == "call" and self.session is None:
            self.session = msg["session"]
            self.remote = msg["from"]
            self.new_pc()
        elif kind == "offer" and msg.get("session") == self.session:
            await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
            await self.flush()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.send({"type": "answer", "to": self.remote, "session": self.session,
                             "sdp": self.pc.localDescription.sdp})
        elif kind == "answer" and msg.get("session") == self.session:
            await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
            await self.flush()
        elif kind == "candidate" and msg.get("session") == self.session:
            self.pending.append(msg)
            if self.pc is not None and self.pc.remoteDescription is not None:
                await self.flush()
        elif kind == "error":
            self.report["errors"].append(msg.get("message"))
        elif kind == "hangup" and msg.get("session") == self.session:
            self.report["errors"].append("hangup: " + msg.get("reason", ""))

    async def flush(self):
        for msg in self.pending:
            text = msg.get("candidate") or ""
            if not text:
                continue
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
            candidate.sdpMid = msg.get("sdpMid")
            candidate.sdpMLineIndex = msg.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)
        self.pending = []

    def done(self):
        return not self.args.stay and self.worked()

    def worked(self):
        r = self.report
        if self.args.stay:
            # Staying is for watching video (a camera may send no audio).
            return r["connected"] and r["video_frames"] >= 30
        return (r["connected"] and r["video_frames"] >= 30 and r["audio_frames"] > 0
                and r["pongs"] >= 1 and r["pings_answered"] >= 1)

    def recent(self):
        """The video of the last --window s: its frame rate and freezes (gaps over 200 ms)."""
        since = time.monotonic() - self.args.window
        recent = [t for t in self.video_times if t >= since]
        self.report["recent_fps"] = len(recent) / self.args.window
        gaps = [b - a for a, b in zip(recent, recent[1:])]
        self.report["recent_freezes"] = sum(1 for g in gaps if g > 0.2)

    async def whep(self):
        """Plays the daemon's stream over WHEP: one POST (aiortc does not trickle: its offer
        holds every candidate), frames until --seconds end or enough are seen, DELETE."""

        pc = self.new_pc()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if self.args.token:
            headers["Authorization"] = "Bearer " + self.args.token
        started = time.monotonic()

        def post():
            request = urllib.request.Request(self.args.whep, method="POST", headers=headers,
                                             data=pc.localDescription.sdp.encode())
            with urllib.request.urlopen(request, timeout=15) as response:
                # (Header names are case-insensitive here; a dict of them would not be.)
                named = {k: response.headers.get(k) for k in ("Location", "ETag", "Content-Type")}
                return response.status, named, response.read().decode()

        status, got, answer = await asyncio.get_running_loop().run_in_executor(None, post)
        self.report["status"] = status
        self.report["location"] = got.get("Location")
        self.report["etag"] = got.get("ETag")
        self.report["content_type"] = got.get("Content-Type")
        self.report["answer_has_candidates"] = "a=candidate:" in answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = started + self.args.seconds
        first = None
        while time.monotonic() < deadline:
            if first is None and self.report["video_frames"] > 0:
                first = time.monotonic() - started
                self.report["first_frame_ms"] = round(first * 1000)
            if not self.args.stay and self.report["video_frames"] >= 30 \
                    and self.report["audio_frames"] > 0:
                break
            await asyncio.sleep(0.05)
        location = urllib.parse.urljoin(self.args.whep, self.report["location"] or "")

        def delete():
            request = urllib.request.Request(location, method="DELETE", headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status

        self.report["delete_status"] = await asyncio.get_running_loop().run_in_executor(
            None, delete)
        await pc.close()
        if self.args.stay:
            self.recent()
        with open(self.args.report, "w") as f:
            json.dump(self.report, f)
        # Staying is for watching video (a camera may send no audio).
        ok = self.report["video_frames"] >= 30 and (
            self.report["audio_frames"] > 0 or self.args.stay)
        return 0 if ok else 1

    async def run(self):
        if self.args.whep:
            return await self.whep()
        async with websockets.connect(self.args.signaling) as ws:
            self.ws = ws
            await self.send({"type": "register", "id": self.args.id})
            pinger = asyncio.ensure_future(self.pinger())
            deadline = time.monotonic() + self.args.seconds
            while time.monotonic() < deadline and not self.done():
                try:
                    text = await asyncio.wait_for(ws.recv(), timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                await self.on_message(json.loads(text))
            if self.done():
                # Keep the call up a little so the other side can see it working too.
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    try:
                        await asyncio.wait_for(ws.recv(), timeout=0.2)
                    except asyncio.TimeoutError:
                        pass
            pinger.cancel()
            if self.args.stay:
                self.recent()
            if self.pc is not None:
                await self.pc.close()
        with open(self.args.report, "w") as f:
            json.dump(self.report, f)
        return 0 if self.worked() else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling", help="the relay's WebSocket URL (protocol v1)")
    parser.add_argument("--whep", help="play over WHEP from this URL instead")
    parser.add_argument("--token", help="WHEP: the bearer token")
    parser.add_argument("--id", required=True)
    parser.add_argument("--call")
    parser.add_argument("--camera", help="--call: watch this camera of the callee's")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--report", required=True)
    parser.add_argument("--log", help="write aiortc's debug log here")
    parser.add_argument("--stay", action="store_true",
                        help="stay in the call until --seconds end (no early exit); report "
                             "the video rate and freezes of the last --window seconds")
    parser.add_argument("--window", type=float, default=6)
    args = parser.parse_args()
    if args.log:
        import logging
        logging.basicConfig(filename=args.log, level=logging.DEBUG,
                            format="%(asctime)s %(name)s %(message)s")
    sys.exit(asyncio.run(Peer(args).run()))


if __name__ == "__main__":
    main()
