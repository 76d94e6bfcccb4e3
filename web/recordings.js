// Recordings (GET /api/recordings): per camera, a day's timeline of what was recorded and
// when something moved; a click plays from there (GET /api/cameras/{name}/playback: the
// segments from that moment joined into one file). Shown only when the device records.
// Loaded after app.js, whose globals it uses ($, token).
"use strict";

const day = { start: 0, end: 0, recordings: [], camera: "", asked: 0 };
// Pages of a day's listing fetched at most (2000 recordings each).
const MAX_PAGES = 20;

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

// The local day of `dateText`: from its midnight to the next (23 or 25 hours on the days
// clocks change).
function setDay(dateText) {
  const [y, m, d] = dateText.split("-").map(Number);
  day.start = new Date(y, m - 1, d).getTime();
  day.end = new Date(y, m - 1, d + 1).getTime();
}

function isoDate(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

async function fetchPage(from, to) {
  const query = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(to).toISOString() });
  if (day.camera) query.set("camera", day.camera);
  try {
    const r = await fetch("/api/recordings?" + query, { headers: authHeaders() });
    return r.ok ? await r.json() : null;
  } catch { return null; }
}

async function loadRecordings() {
  // Only the latest request's answer is drawn (a camera or day changed meanwhile).
  const asked = ++day.asked;
  const first = await fetchPage(day.start, day.end);
  if (asked !== day.asked || !first || !first.recording) return;
  $("recordings").hidden = false;
  const cameraNames = (first.recorders || []).map((r) => r.camera);
  const select = $("rec-camera");
  const shown = [...select.options].map((o) => o.value);
  if (shown.join("\n") !== cameraNames.join("\n")) {
    select.replaceChildren(...cameraNames.map((name) => {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      return o;
    }));
  }
  if (!cameraNames.includes(day.camera) && cameraNames.length) {
    day.camera = cameraNames[0];
    return loadRecordings();
  }
  select.value = day.camera;
  let listed = first.recordings || [];
  // A busy day is listed in pages: the next from the last one's end.
  let page = first;
  for (let pages = 1; page.more && pages < MAX_PAGES && listed.length; pages++) {
    page = await fetchPage(Date.parse(listed[listed.length - 1].end) + 1, day.end);
    if (asked !== day.asked || !page) return;
    listed = listed.concat(page.recordings || []);
  }
  const recorder = (first.recorders || []).find((r) => r.camera === day.camera);
  $("rec-state").textContent = recorder
    ? recorder.state + (recorder.reason ? ": " + recorder.reason : "")
    : "";
  day.recordings = listed.map((r) => ({ start: Date.parse(r.start), end: Date.parse(r.end), id: r.id }));
  const motions = (first.motion || []).map((m) => ({
    start: Date.parse(m.start), end: m.end ? Date.parse(m.end) : Date.now(),
  }));
  drawTimeline(day.recordings, motions);
  $("rec-summary").textContent = `${day.recordings.length} recordings, ${motions.length} motions`;
}

function span(kind, start, end) {
  const el = document.createElement("span");
  el.className = kind;
  const length = day.end - day.start;
  const left = Math.max(0, (start - day.start) / length) * 100;
  const width = Math.max(0.15, ((Math.min(end, day.end) - Math.max(start, day.start)) / length) * 100);
  el.style.left = left + "%";
  el.style.width = width + "%";
  return el;
}

function drawTimeline(recordings, motions) {
  const line = $("rec-timeline");
  line.replaceChildren(
    ...recordings.map((r) => span("rec", r.start, r.end)),
    ...motions.map((m) => span("motion", m.start, m.end)),
  );
}

// A click at a moment plays from there: the recording that holds it, else the nearest (a
// pixel of the day's line is a minute and more: a short recording is a few pixels wide).
function playAt(ms) {
  const distance = (r) => (ms < r.start ? r.start - ms : ms > r.end ? ms - r.end : 0);
  // A recording begun a moment ago has nothing to play yet.
  const playable = day.recordings.filter((r) => r.end - r.start >= 1500);
  const at = playable.reduce((best, r) => (!best || distance(r) < distance(best) ? r : best), null);
  if (!at) return;
  const from = Math.min(Math.max(ms, at.start), Math.max(at.start, at.end - 1000));
  const query = new URLSearchParams({ start: new Date(from).toISOString(), duration: "600" });
  if (token) query.set("token", token);
  const video = $("rec-video");
  video.hidden = false;
  // The file begins where the first segment begins: seek to the moment clicked.
  const offset = (from - at.start) / 1000;
  video.onloadedmetadata = () => { if (offset > 0) video.currentTime = offset; };
  video.src = `/api/cameras/${encodeURIComponent(day.camera)}/playback?${query}`;
  video.play().catch(() => {});
  $("rec-at").textContent = new Date(from).toLocaleTimeString();
}

function setUpRecordings() {
  const date = $("rec-date");
  date.value = isoDate(Date.now());
  setDay(date.value);
  date.addEventListener("change", () => {
    if (!date.value) return;
    setDay(date.value);
    loadRecordings();
  });
  $("rec-camera").addEventListener("change", (e) => {
    day.camera = e.target.value;
    loadRecordings();
  });
  $("rec-timeline").addEventListener("click", (e) => {
    const box = e.currentTarget.getBoundingClientRect();
    const share = (e.clientX - box.left) / box.width;
    playAt(day.start + share * (day.end - day.start));
  });
  loadRecordings();
  // Today's timeline grows.
  setInterval(() => {
    if (!$("recordings").hidden && isoDate(Date.now()) === date.value) loadRecordings();
  }, 30000);
}

setUpRecordings();
