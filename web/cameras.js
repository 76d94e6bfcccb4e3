// The cameras of the device that served this page (GET /api/cameras): a picker for the
// camera a call watches (app.js reads #camera), and a grid that watches every camera at once,
// one WHEP session each (POST /api/cameras/{name}/whep; no signaling). Loaded after app.js,
// whose globals it uses ($, params, token, state, log).
"use strict";

const cameras = { list: [], tiles: new Map() };

async function loadCameras() {
  let listed;
  try {
    const r = await fetch("/api/cameras", { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!r.ok) return;
    listed = await r.json();
  } catch { return; }
  cameras.list = (listed.cameras || []).map((c) => c.name);
  $("camera").replaceChildren(...cameras.list.map((name) => {
    const o = document.createElement("option");
    o.value = name;
    o.textContent = name;
    return o;
  }));
  if (cameras.list.includes(params.get("camera"))) $("camera").value = params.get("camera");
  const several = cameras.list.length > 1;
  $("camera-picker").hidden = !several;
  $("grid-open").hidden = !several;
  if (several && params.get("grid") === "1") openGrid();
}

// The offer's candidates, gathered (WHEP without trickle), at most `ms` later.
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); done(); }
    });
  });
}

async function watchCamera(name, tile) {
  const pc = new RTCPeerConnection(state.iceConfig);
  tile.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    if (ev.track.kind === "video") tile.video.srcObject = new MediaStream([ev.track]);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 1500);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch("/api/cameras/" + encodeURIComponent(name) + "/whep", {
    method: "POST", headers, body: pc.localDescription.sdp,
  });
  if (r.status !== 201) throw new Error(name + ": " + r.status + " " + (await r.text()).trim());
  tile.location = r.headers.get("Location");
  // Closed while the offer was out: the session just made goes at once.
  if (tile.closed) return leave(tile);
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
}

// Ends a tile's WHEP session (kept alive through a page being left) and its connection.
function leave(tile) {
  tile.closed = true;
  if (tile.location) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    fetch(tile.location, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    tile.location = null;
  }
  if (tile.pc) tile.pc.close();
}

function openGrid() {
  closeGrid();
  $("stage").hidden = true;
  $("grid").hidden = false;
  for (const name of cameras.list) {
    const figure = document.createElement("figure");
    figure.className = "tile";
    figure.dataset.camera = name;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    figure.append(video, caption);
    $("tiles").append(figure);
    const tile = { video, figure, pc: null, location: null, closed: false };
    cameras.tiles.set(name, tile);
    watchCamera(name, tile).catch((err) => {
      if (tile.closed) return;
      figure.classList.add("failed");
      caption.textContent = name + " — " + err.message;
      log("grid: " + err.message);
    });
  }
}

function closeGrid() {
  for (const tile of cameras.tiles.values()) leave(tile);
  cameras.tiles.clear();
  $("tiles").replaceChildren();
  $("grid").hidden = true;
  $("stage").hidden = false;
}

$("grid-open").onclick = openGrid;
$("grid-close").onclick = closeGrid;
window.addEventListener("pagehide", closeGrid);
loadCameras();
