// webrtcd's built-in client: signaling protocol v1 (docs/protocol.md) over /signaling.
// URL parameters: token (relay/API token), id (our id), mode (viewer|intercom),
// codec (auto|vp8|h264), autoanswer (1|0; 0: an incoming call rings, with Accept and Reject),
// call (a peer to call once it is online), camera (which of a device's cameras a call
// watches; cameras.js), grid (1: watch every camera at once), processing (1|0; 0: the microphone without the
// browser's echo cancellation, noise suppression and gain control: a speakerphone that does
// its own),
// report (a same-origin URL that receives this page's state as JSON every half second, for
// monitoring; other origins are ignored: the state holds addresses).
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const token = params.get("token");
const myId = params.get("id") || "browser-" + Math.random().toString(36).slice(2, 8);
if (params.get("mode")) $("mode").value = params.get("mode");
if (params.get("codec")) $("codec").value = params.get("codec");
if (params.get("autoanswer")) $("autoanswer").checked = params.get("autoanswer") === "1";

const state = {
  ws: null, registered: false, peers: [], call: null, errors: [], log: [],
  pageLoaded: performance.now(), firstFrameMs: null, iceConfig: {},
};

// ---- messages to the person --------------------------------------------------------------
function banner(text, kind = "error") {
  const b = $("banner");
  b.textContent = text;
  b.className = "banner " + kind;
  b.hidden = !text;
  if (text && kind === "error") state.errors.push(text);
}
function log(text) {
  state.log.push(text);
  if (state.log.length > 50) state.log.shift();
  console.log(text);
}
const REASONS = {
  busy: "The device is busy: it has as many calls as it can take.",
  "peer-left": "The other side went away.",
  timeout: "The call could not be connected in time.",
  "ice-failed": "No network path to the device was found (ICE failed).",
  "media-error": "The device could not start its camera or microphone.",
  shutdown: "The device is shutting down.",
  rejected: "The call was declined.",
  "no-answer": "Nobody answered.",
  cancelled: "The caller hung up.",
  "session-taken": "The device has a call with this call's id already; call again.",
  "no-such-camera": "The device has no camera of that name.",
  "camera-removed": "The camera was taken out of the device's profile.",
  "camera-changed": "The camera was changed; call again to watch it.",
};

// ---- ICE servers -------------------------------------------------------------------------
// The device hands out its STUN/TURN servers, with short-lived TURN credentials, so a browser
// behind NAT can relay too. Asked once when the page loads (the credentials last a day by
// default: turn_credential_ttl_secs).
async function loadIceConfig() {
  try {
    const r = await fetch("/api/ice-servers", { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (r.ok) state.iceConfig = await r.json();
  } catch { /* none: host candidates only */ }
}

// ---- signaling ---------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/signaling` + (token ? `?token=${encodeURIComponent(token)}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => send({ type: "register", id: myId });
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    onSignal(msg);
  };
  ws.onclose = async () => {
    state.registered = false;
    $("me").textContent = "offline";
    // A refused upgrade looks like any other failure: ask /signaling itself why (a plain GET
    // gets 400 when the token is fine, 401 or 403 when it is not).
    let why = "The daemon is unreachable. Retrying…";
    try {
      const r = await fetch("/signaling", { headers: token ? { Authorization: "Bearer " + token } : {} });
      if (r.status === 401) why = token ? "The token in the address is not accepted." : "A token is needed: add ?token=… to the address.";
      else if (r.status === 403) why = "The device refused this page: " + (await r.text()).trim();
    } catch { /* unreachable indeed */ }
    banner(why);
    setTimeout(connect, 2000);
  };
}
function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function onSignal(msg) {
  switch (msg.type) {
    case "registered":
      state.registered = true;
      state.peers = msg.peers;
      $("me").textContent = "you are " + msg.id;
      banner("");
      renderPeers();
      maybeAutoCall();
      break;
    case "peer-joined":
      if (!state.peers.includes(msg.id)) state.peers.push(msg.id);
      renderPeers();
      maybeAutoCall();
      break;
    case "peer-left":
      state.peers = state.peers.filter((p) => p !== msg.id);
      renderPeers();
      if (state.call && state.call.peer === msg.id) endCall("peer-left", false);
      break;
    case "error":
      if (msg.code === "id-taken") banner(`The name ${myId} is already in use.`);
      else banner(`The relay refused a message: ${msg.message}`);
      if (state.call && msg.session === state.call.session) endCall("error", false);
      break;
    case "call": onIncomingCall(msg); break;
    case "ringing":
      if (state.call && msg.session === state.call.session && state.call.role === "caller" && !state.call.remoteSet) {
        state.call.remoteRinging = true;
        setCallState("ringing…");
        // (1.2) Answered early: connect while it rings; nothing flows until someone accepts.
        if (msg.sdp && !state.call.answeredEarly) onEarlyAnswer(state.call, msg.sdp).catch((e) => {
          log("early answer refused: " + e);
          endCall("bad-sdp", true);
        });
      }
      break;
    case "offer": onOffer(msg); break;
    case "answer": onAnswer(msg); break;
    case "candidate": onCandidate(msg); break;
    case "hangup":
      if (state.call && msg.session === state.call.session) endCall(msg.reason || "hangup", false);
      break;
  }
}

function renderPeers() {
  const ul = $("peers");
  if (!state.peers.length) {
    ul.innerHTML = '<li class="muted">nobody yet</li>';
    return;
  }
  ul.replaceChildren(...state.peers.map((p) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = p;
    const b = document.createElement("button");
    b.textContent = "Call";
    b.className = "call";
    b.dataset.peer = p;
    b.onclick = () => startCall(p);
    li.append(name, b);
    return li;
  }));
}

let autoCalled = false;
function maybeAutoCall() {
  const target = params.get("call");
  if (target && !autoCalled && state.peers.includes(target)) {
    autoCalled = true;
    // `call_after_ms`: call that long after the peer is listed, as a person who reads the
    // page first would (the benchmark's "click"), not while the browser is still starting.
    const after = Number(params.get("call_after_ms")) || 0;
    setTimeout(() => startCall(target), after);
  }
}

// ---- the call ----------------------------------------------------------------------------
function wallClock() { return performance.timeOrigin + performance.now(); }

// A peer connection made while the page is idle, for the next call: making one takes
// Chromium ~10 ms, which a click on Call would otherwise wait for. It has nothing in it
// (no track, no DataChannel, no candidate) until a call takes it.
let sparePc = null;
function peerConnection() {
  return new RTCPeerConnection({ bundlePolicy: "max-bundle", ...state.iceConfig });
}
function makeSparePc() {
  if (!sparePc && !state.call && window.RTCPeerConnection) sparePc = peerConnection();
}
function whenIdle(f) {
  (window.requestIdleCallback || ((g) => setTimeout(g, 0)))(f, { timeout: 300 });
}
function takePc() {
  const pc = sparePc || peerConnection();
  sparePc = null;
  return pc;
}

// `start`: when the call began (the click, or the `call` that came).
function newCall(peer, session, role, start = wallClock()) {
  const pc = takePc();
  const call = {
    peer, session, role, pc, channel: null, pending: [], remoteSet: false,
    // Wall-clock milliseconds of each step of setting the call up (a benchmark splits the
    // time to the first frame with them): start, offer, answer, ICE, DTLS, first RTP.
    phases: { start },
    pings: new Map(), nextPing: 1, pongs: 0, pingsAnswered: 0, rttMs: null,
    started: performance.now(), connected: false, stats: {}, localCandidates: [], remoteCandidates: [],
  };
  pc.onicecandidate = (ev) => {
    const c = ev.candidate;
    if (c) call.localCandidates.push(c.address || c.candidate);
    send(c ? { type: "candidate", to: peer, session, candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
           : { type: "candidate", to: peer, session, candidate: "", sdpMid: null, sdpMLineIndex: null });
  };
  pc.oniceconnectionstatechange = () => {
    if (["connected", "completed"].includes(pc.iceConnectionState)) call.phases.ice ??= wallClock();
  };
  pc.ontrack = (ev) => {
    if (ev.track.kind === "video") {
      // A remote track is unmuted by its first RTP packet.
      ev.track.addEventListener("unmute", () => { call.phases.rtp ??= wallClock(); }, { once: true });
    }
    const el = ev.track.kind === "video" ? $("remote") : $("remote-audio");
    el.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    el.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    setCallState(call.remoteRinging ? "ringing…" : pc.connectionState);
    if (pc.connectionState === "connected" && !call.connected) {
      call.connected = true;
      call.connectedAt = performance.now();
      call.phases.dtls ??= wallClock();
    }
    // Never up: give up. Up once: the path changed under the call (see watchPath).
    if (pc.connectionState === "failed" && !call.connected) endCall("ice-failed", true);
  };
  pc.ondatachannel = (ev) => useChannel(call, ev.channel);
  $("remote").onloadeddata = () => {
    const now = performance.now();
    if (state.firstFrameMs === null) state.firstFrameMs = now - state.pageLoaded;
    // Per call, as wall-clock time, so a benchmark on the same machine can line it up.
    if (state.call && state.call.firstFrameAt == null) state.call.firstFrameAt = performance.timeOrigin + now;
  };
  state.call = call;
  $("call-bar").hidden = false;
  setCallState("connecting to " + peer);
  return call;
}

// A call whose path went away (Wi-Fi to LTE, a cable pulled): once it has been down for a
// few seconds — ICE disconnected, or no pong to our pings (a path can die one way only) — the
// side that offered restarts ICE on the same call (new credentials, candidates from the
// networks there are now), and again while it stays down. The device does the same when it
// offered. A call down for good ends: the device ends it after its ice_recovery_secs, this
// page after PATH_GIVE_UP_MS.
const PATH_RESTART_MS = 3000, PATH_RETRY_MS = 5000, PONG_SILENCE_MS = 4000, PATH_GIVE_UP_MS = 60000;
function watchPath(call) {
  // Connected early while the callee rings: nothing to watch until it is accepted.
  if (!call.connected || state.call !== call || call.remoteRinging) return;
  const now = performance.now();
  const iceDown = ["disconnected", "failed"].includes(call.pc.iceConnectionState);
  const channelOpen = call.channel && call.channel.readyState === "open";
  // Only from a device known to answer pings.
  const noPong = channelOpen && call.lastPongAt != null && now - call.lastPongAt > PONG_SILENCE_MS;
  if (!iceDown && !noPong) { call.downSince = null; return; }
  if (call.downSince == null) call.downSince = now;
  if (now - call.downSince > PATH_GIVE_UP_MS) { endCall("network", true); return; }
  if (call.role === "caller" && now - call.downSince >= PATH_RESTART_MS &&
      now - (call.lastRestartAt || 0) >= PATH_RETRY_MS) {
    call.lastRestartAt = now;
    restartIce(call).catch((e) => log("ICE restart: " + e));
  }
}
setInterval(() => { if (state.call) watchPath(state.call); }, 1000);

async function restartIce(call) {
  log("restarting ICE");
  call.iceRestarts = (call.iceRestarts || 0) + 1;
  call.restartPending = true;
  const offer = await call.pc.createOffer({ iceRestart: true });
  await call.pc.setLocalDescription(offer);
  send({ type: "offer", to: call.peer, session: call.session, sdp: call.pc.localDescription.sdp });
}

function setCallState(text) { $("call-state").textContent = text; }

async function localMedia() {
  if ($("mode").value !== "intercom") return null;
  try {
    const audio = params.get("processing") === "0"
      ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false }
      : true;
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio });
    $("local").srcObject = stream;
    $("local").hidden = false;
    return stream;
  } catch (e) {
    banner("Camera or microphone refused (" + e.name + "): continuing as a viewer.");
    return null;
  }
}

function preferCodec(transceiver) {
  const want = $("codec").value;
  if (want === "auto" || !RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
  const mime = want === "h264" ? "video/h264" : "video/vp8";
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  let first = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  if (want === "h264") {
    // Constrained baseline with packetization-mode 1 first: what cameras and webrtcd encode.
    first.sort((a, b) => (/42e01f/.test(b.sdpFmtpLine) && /packetization-mode=1/.test(b.sdpFmtpLine)) -
                         (/42e01f/.test(a.sdpFmtpLine) && /packetization-mode=1/.test(a.sdpFmtpLine)));
  }
  const rest = codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  if (first.length) transceiver.setCodecPreferences([...first, ...rest]);
  else banner("This browser cannot use " + want.toUpperCase() + ".");
}

async function startCall(peer) {
  if (state.call) endCall("hangup", true);
  banner("");
  // Unguessable: a device refuses a call whose id another caller's live call holds.
  const salt = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  const session = myId + "-" + Date.now().toString(36) + "-" + salt;
  const start = wallClock();
  // `early`: a callee that rings may answer at once, so that accepting connects in a blink.
  // The camera picked (cameras.js; shown only when the device has several).
  const camera = $("camera-picker").hidden ? "" : $("camera").value;
  send(camera ? { type: "call", to: peer, session, early: true, camera } : { type: "call", to: peer, session, early: true });
  const call = newCall(peer, session, "caller", start);
  const stream = await localMedia();
  const direction = stream ? "sendrecv" : "recvonly";
  const video = call.pc.addTransceiver(stream ? stream.getVideoTracks()[0] : "video", { direction, streams: stream ? [stream] : [] });
  call.pc.addTransceiver(stream ? stream.getAudioTracks()[0] : "audio", { direction, streams: stream ? [stream] : [] });
  preferCodec(video);
  useChannel(call, call.pc.createDataChannel("chat"));
  const offer = await call.pc.createOffer();
  await call.pc.setLocalDescription(offer);
  call.phases.offer = wallClock();
  send({ type: "offer", to: peer, session, sdp: call.pc.localDescription.sdp });
}

function onIncomingCall(msg) {
  if (state.call) {
    send({ type: "hangup", to: msg.from, session: msg.session, reason: "busy" });
    return;
  }
  const call = newCall(msg.from, msg.session, "callee");
  if (!$("autoanswer").checked) ring(call);
}

// ---- ringing: an incoming call waits for Accept or Reject --------------------------------
const RING_TIMEOUT_MS = 30000;
function ring(call) {
  call.ringing = true;
  send({ type: "ringing", to: call.peer, session: call.session });
  $("incoming-from").textContent = call.peer;
  $("incoming").hidden = false;
  setCallState("ringing");
  ringTone(true);
  call.ringTimer = setTimeout(() => { if (state.call === call && call.ringing) endCall("no-answer", true); }, RING_TIMEOUT_MS);
}
function stopRinging(call) {
  call.ringing = false;
  clearTimeout(call.ringTimer);
  $("incoming").hidden = true;
  ringTone(false);
}
function acceptCall() {
  const call = state.call;
  if (!call || !call.ringing) return;
  stopRinging(call);
  setCallState("connecting to " + call.peer);
  // The offer came while ringing: answer it now.
  if (call.heldOffer) onOffer(call.heldOffer);
}
function rejectCall() {
  const call = state.call;
  if (call && call.ringing) endCall("rejected", true);
}
// A ring tone (two tones, on and off), where the browser lets a page play sound.
let ringAudio = null;
function ringTone(on) {
  if (ringAudio) { clearInterval(ringAudio.timer); ringAudio.ctx.close().catch(() => {}); ringAudio = null; }
  if (!on) return;
  try {
    const ctx = new AudioContext();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start();
    }
    let phase = 0;
    const timer = setInterval(() => { gain.gain.value = (phase++ % 3 === 0) ? 0.1 : 0; }, 1000);
    ringAudio = { ctx, timer };
  } catch (e) { log("no ring tone: " + e); }
}

async function onOffer(msg) {
  const call = state.call;
  if (!call || call.session !== msg.session) return;
  call.phases.offer ??= wallClock();
  if (call.ringing) { call.heldOffer = msg; return; }
  if (call.remoteSet) {
    // The device restarted ICE on this call: same tracks, new path.
    await call.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await call.pc.setLocalDescription(await call.pc.createAnswer());
    send({ type: "answer", to: call.peer, session: call.session, sdp: call.pc.localDescription.sdp });
    return;
  }
  const stream = await localMedia();
  await call.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  call.remoteSet = true;
  for (const t of call.pc.getTransceivers()) {
    const kind = t.receiver.track.kind;
    const track = stream && (kind === "video" ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0]);
    if (track) {
      await t.sender.replaceTrack(track);
      t.sender.setStreams && t.sender.setStreams(stream);
      t.direction = "sendrecv";
    } else {
      t.direction = "recvonly";
    }
  }
  await flushCandidates(call);
  const answer = await call.pc.createAnswer();
  await call.pc.setLocalDescription(answer);
  call.phases.answer ??= wallClock();
  send({ type: "answer", to: call.peer, session: call.session, sdp: call.pc.localDescription.sdp });
}

async function onEarlyAnswer(call, sdp) {
  // Marked at once: the acceptance may come while the description is being set.
  call.answeredEarly = true;
  call.phases.earlyAnswer ??= wallClock();
  await call.pc.setRemoteDescription({ type: "answer", sdp });
  call.remoteSet = true;
  await flushCandidates(call);
}

async function onAnswer(msg) {
  const call = state.call;
  if (!call || call.session !== msg.session) return;
  call.phases.answer ??= wallClock();
  if (call.restartPending) {
    call.restartPending = false;
  } else if (call.remoteRinging && call.answeredEarly) {
    // The early answer again: someone accepted.
    call.remoteRinging = false;
    setCallState(call.pc.connectionState);
    return;
  }
  call.remoteRinging = false;
  await call.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  call.remoteSet = true;
  await flushCandidates(call);
}

async function onCandidate(msg) {
  const call = state.call;
  if (!call || call.session !== msg.session) return;
  const init = { candidate: msg.candidate || "", sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex };
  call.remoteCandidates.push(init.candidate);
  if (!call.remoteSet) { call.pending.push(init); return; }
  await addCandidate(call, init);
}
async function flushCandidates(call) {
  for (const c of call.pending.splice(0)) await addCandidate(call, c);
}
async function addCandidate(call, init) {
  if (!init.candidate) return; // end of candidates: nothing to add
  try { await call.pc.addIceCandidate(init); } catch (e) { log("candidate refused: " + e); }
}

function endCall(reason, tellPeer) {
  const call = state.call;
  if (!call) return;
  if (call.ringing) stopRinging(call);
  // Hanging up while the other side rings withdraws the call.
  if (reason === "hangup" && call.remoteRinging) reason = "cancelled";
  if (tellPeer) send({ type: "hangup", to: call.peer, session: call.session, reason });
  state.lastCall = { session: call.session, reason, localCandidates: call.localCandidates,
    remoteCandidates: call.remoteCandidates, iceConnectionState: call.pc.iceConnectionState,
    iceGatheringState: call.pc.iceGatheringState, stats: call.stats };
  call.pc.close();
  state.call = null;
  $("remote").srcObject = null;
  $("remote-audio").srcObject = null;
  const local = $("local").srcObject;
  if (local) local.getTracks().forEach((t) => t.stop());
  $("local").hidden = true;
  $("call-bar").hidden = true;
  $("stats").hidden = true;
  $("chat-input").disabled = $("chat-form").querySelector("button").disabled = true;
  state.lastEnd = reason;
  whenIdle(makeSparePc);
  if (!tellPeer && reason !== "hangup") banner(REASONS[reason] || `The call ended (${reason}).`, "info");
}

// ---- DataChannel: chat and ping ----------------------------------------------------------
function useChannel(call, channel) {
  call.channel = channel;
  channel.onopen = () => {
    $("chat-input").disabled = $("chat-form").querySelector("button").disabled = false;
  };
  channel.onmessage = (ev) => {
    let msg = null;
    try { msg = JSON.parse(ev.data); } catch { /* plain chat text */ }
    if (msg && msg.type === "ping") {
      channel.send(JSON.stringify({ type: "pong", id: msg.id }));
      call.pingsAnswered++;
    } else if (msg && msg.type === "pong" && call.pings.has(msg.id)) {
      call.rttMs = performance.now() - call.pings.get(msg.id);
      call.pings.delete(msg.id);
      call.pongs++;
      call.lastPongAt = performance.now();
      $("rtt").textContent = call.rttMs.toFixed(1) + " ms";
    } else {
      chatLine(call.peer + ": " + ev.data);
    }
  };
}
function chatLine(text) {
  const div = document.createElement("div");
  div.textContent = text;
  $("chat-log").append(div);
  $("chat-log").scrollTop = 1e9;
}
$("chat-form").onsubmit = (ev) => {
  ev.preventDefault();
  const call = state.call;
  const text = $("chat-input").value;
  if (call && call.channel && call.channel.readyState === "open" && text) {
    call.channel.send(text);
    chatLine("me: " + text);
    $("chat-input").value = "";
  }
};
setInterval(() => {
  const call = state.call;
  if (call && call.channel && call.channel.readyState === "open") {
    const id = call.nextPing++;
    call.pings.set(id, performance.now());
    if (call.pings.size > 16) call.pings.delete(call.pings.keys().next().value);
    call.channel.send(JSON.stringify({ type: "ping", id }));
  }
}, 1000);

// ---- statistics --------------------------------------------------------------------------
let lastBytes = null;
async function readStats() {
  const call = state.call;
  if (!call) return;
  const report = await call.pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const s = {};
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      s.codec = byId.get(r.codecId)?.mimeType?.split("/")[1];
      s.width = r.frameWidth; s.height = r.frameHeight; s.fps = r.framesPerSecond;
      s.framesDecoded = r.framesDecoded || 0;
      s.freezes = r.freezeCount || 0;
      s.freezeMs = Math.round(1000 * (r.totalFreezesDuration || 0));
      s.nacks = r.nackCount || 0;
      s.packetsLost = r.packetsLost || 0; s.packetsReceived = r.packetsReceived || 0;
      const now = r.timestamp;
      if (lastBytes) s.kbps = (8 * (r.bytesReceived - lastBytes.bytes)) / (now - lastBytes.t);
      lastBytes = { bytes: r.bytesReceived, t: now };
    }
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      s.audioPackets = r.packetsReceived || 0;
      s.audioSamples = r.totalSamplesReceived || 0;
      s.audioCodec = byId.get(r.codecId)?.mimeType?.split("/")[1];
    }
    if (r.type === "outbound-rtp" && r.kind === "video") {
      s.framesSent = r.framesEncoded || r.framesSent || 0;
      s.sentCodec = byId.get(r.codecId)?.mimeType?.split("/")[1];
    }
  });
  // The pair in use: the transport's selected one (after an ICE restart the old pair may still
  // be listed as nominated).
  let selected = null;
  report.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) selected = byId.get(r.selectedCandidatePairId); });
  report.forEach((r) => { if (!selected && r.type === "candidate-pair" && r.nominated && r.state === "succeeded") selected = r; });
  if (selected) {
    const r = selected;
    s.rttMs = r.currentRoundTripTime !== undefined ? r.currentRoundTripTime * 1000 : undefined;
    const local = byId.get(r.localCandidateId), remote = byId.get(r.remoteCandidateId);
    s.path = local && remote ? `${local.candidateType} ${local.address || local.ip} ⇄ ${remote.candidateType} ${remote.address || remote.ip}` : undefined;
    s.localPort = local && local.port;
  }
  s.iceRestarts = call.iceRestarts || 0;
  // What the device sends this call: its rendition and its estimate of the link.
  const sent = await deviceSide(call);
  if (sent) { s.rendition = sent.rendition; s.estimateKbps = sent.estimate_kbps; }
  call.stats = s;
  const loss = s.packetsReceived ? (100 * s.packetsLost / (s.packetsLost + s.packetsReceived)).toFixed(1) : "0.0";
  $("stats").textContent = [
    `codec      ${s.codec || "–"}${s.audioCodec ? " + " + s.audioCodec : ""}`,
    `resolution ${s.width ? s.width + "×" + s.height : "–"}`,
    `fps        ${s.fps ?? "–"}`,
    `bitrate    ${s.kbps ? s.kbps.toFixed(0) + " kbit/s" : "–"}`,
    `loss       ${loss} %`,
    `rtt        ${s.rttMs !== undefined ? s.rttMs.toFixed(1) + " ms" : "–"}`,
    `freezes    ${s.freezes ?? "–"}`,
    `nacks      ${s.nacks ?? "–"}`,
    `rendition  ${s.rendition || "–"}`,
    `estimate   ${s.estimateKbps ? s.estimateKbps + " kbit/s" : "–"}`,
  ].join("\n");
  $("stats").hidden = !$("show-stats").checked;
}
setInterval(() => readStats().catch((e) => log("stats: " + e)), 1000);

// The device's own view of a call with it (GET /api/calls): what it sends this page.
async function deviceSide(call) {
  if (!call.session) return null;
  try {
    const r = await fetch("/api/calls", { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!r.ok) return null;
    const mine = (await r.json()).find((c) => c.session === call.session);
    return mine ? mine.send : null;
  } catch (e) {
    return null;
  }
}

// ---- secure context ----------------------------------------------------------------------
// Browsers give a page the camera and microphone only over HTTPS (or on localhost): over
// plain HTTP the page still watches, and says where talking works.
if (!window.isSecureContext) {
  const talk = $("mode").querySelector('option[value="intercom"]');
  talk.disabled = true;
  if ($("mode").value === "intercom") $("mode").value = "viewer";
  const port = document.querySelector('meta[name="webrtcd-https-port"]')?.content;
  const https = port ? `https://${location.hostname}:${port}${location.pathname}${location.search}` : null;
  const hint = $("https-hint");
  hint.hidden = false;
  if (https) {
    hint.append("Talking needs HTTPS: ");
    const a = document.createElement("a");
    a.href = https;
    a.textContent = https;
    hint.append(a);
  } else {
    hint.append("Talking needs HTTPS; this device serves none (set tls in webrtcd.toml).");
  }
  state.httpsHint = hint.textContent;
}

// ---- monitoring report (?report=URL, same origin only) ------------------------------------
let reportUrl = params.get("report");
if (reportUrl) {
  try {
    const target = new URL(reportUrl, location.href);
    reportUrl = target.origin === location.origin ? target.href : null;
  } catch { reportUrl = null; }
  if (!reportUrl) log("report: only a URL of this page's own origin is accepted");
}
if (reportUrl) {
  setInterval(() => {
    const call = state.call;
    const video = $("remote");
    const body = {
      id: myId, registered: state.registered, peers: state.peers, errors: state.errors,
      lastEnd: state.lastEnd || null, lastCall: state.lastCall || null, log: state.log.slice(-10),
      firstFrameMs: state.firstFrameMs, audioWarmMs: state.audioWarmMs ?? null, secureContext: window.isSecureContext,
      httpsHint: state.httpsHint || null, talkOffered: !$("mode").querySelector('option[value="intercom"]').disabled,
      playing: !!(video.srcObject && video.videoWidth > 0 && video.currentTime > 0),
      call: call && {
        session: call.session, peer: call.peer, role: call.role, connected: call.connected,
        ringing: !!call.ringing, remoteRinging: !!call.remoteRinging,
        connectionState: call.pc.connectionState, signalingState: call.pc.signalingState,
        iceConnectionState: call.pc.iceConnectionState, iceGatheringState: call.pc.iceGatheringState,
        channel: call.channel ? call.channel.readyState : null,
        localCandidates: call.localCandidates, pongs: call.pongs, pingsAnswered: call.pingsAnswered, rttMs: call.rttMs, stats: call.stats,
        firstFrameAt: call.firstFrameAt || null, phases: call.phases,
      },
    };
    fetch(reportUrl, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }).catch(() => {});
  }, 500);
}

// Anything that fails inside the call's async steps is shown, not swallowed.
window.addEventListener("unhandledrejection", (ev) => {
  banner("The call failed: " + (ev.reason && ev.reason.message ? ev.reason.message : ev.reason));
});

$("hangup").onclick = () => endCall("hangup", true);
$("accept").onclick = acceptCall;
$("reject").onclick = rejectCall;
$("unmute").onclick = () => { $("remote").muted = false; $("remote-audio").play().catch(() => {}); };
$("show-stats").onchange = () => { $("stats").hidden = !$("show-stats").checked || !state.call; };
loadIceConfig().finally(() => { connect(); whenIdle(makeSparePc); });

// Chromium's first remote audio track in a page waits, on the page's own thread, for the audio
// output's parameters: 100–180 ms measured on the benchmark machine, right after the first
// answer, and every later step of that call (ICE, DTLS, first frame) waited behind it. An
// AudioContext asks for the same parameters; made (and closed) while the page is idle, that
// cost is paid while the person reads the page, not after they click Call.
function warmAudioOutput() {
  if (!window.AudioContext) return;
  const started = performance.now();
  try {
    new AudioContext().close().catch(() => {});
  } catch {
    return;
  }
  state.audioWarmMs = Math.round(performance.now() - started);
}
whenIdle(warmAudioOutput);
