// sharpcam WebRTC demo page: sends the camera to the relay (or receives its source) and
// shows the returned stream, with live figures from getStats() and the server.
//
// Signalling follows aiortc's server example: wait until ICE gathering is complete (aiortc
// does not trickle candidates), POST {sdp, type} to /offer, apply the JSON answer.
"use strict";

const ICE_GATHER_TIMEOUT_MS = 3000;
// What the page sends (RTCRtpEncodingParameters): a smaller, bitrate-capped stream shows
// what a poor link delivers, and what a ×2 model makes of it.
const SEND_PRESETS = {
  full: { scaleResolutionDownBy: 1 },
  half: { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  quarter: { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
};
const STATS_INTERVAL_MS = 1000;
const SPLIT_SEND_INTERVAL_MS = 50;

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// The relay's access token, from the address `sharpcam serve` printed (?token=...): sent
// with every API request in a header (never in a URL the server could log).
const TOKEN = params.get("token");
const apiHeaders = (extra = {}) => (TOKEN ? { ...extra, "X-Sharpcam-Token": TOKEN } : extra);

const state = {
  config: null,
  pc: null,
  channel: null,
  localStream: null,
  sharpen: params.get("sharpen") !== "0",
  send: SEND_PRESETS[params.get("send")] ? params.get("send") : null, // null: by the model
  split: clamp(Number(params.get("split") ?? 0.5)),
  lastStats: null,
  serverMs: 0,
  lastSplitSent: 0,
  splitTimer: null,
  statsTimer: null,
};

function clamp(x) {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0.5;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function show(id, value, digits = 0) {
  $(id).textContent =
    value === null || value === undefined || Number.isNaN(value)
      ? "–"
      : typeof value === "number"
        ? value.toFixed(digits)
        : String(value);
}

// --- signalling ----------------------------------------------------------------------

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, timeoutMs); // post what we have after the timeout
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function preferCodec(transceiver, name) {
  if (!name || !RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === `video/${name.toLowerCase()}`);
  if (wanted.length === 0) {
    setStatus(`this browser cannot send ${name}; using its default codec`, true);
    return;
  }
  transceiver.setCodecPreferences([...wanted, ...codecs.filter((c) => !wanted.includes(c))]);
}

async function start() {
  $("start").disabled = true;
  $("stop").disabled = false;
  const receiveOnly = state.config && state.config.mode === "receive";
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;

  pc.addEventListener("connectionstatechange", () => {
    setStatus(pc.connectionState, pc.connectionState === "failed");
    if (pc.connectionState === "failed") stop();
  });
  pc.addEventListener("track", (event) => {
    if (event.track.kind !== "video") return;
    $("remote").srcObject = event.streams[0] || new MediaStream([event.track]);
    $("stage").classList.remove("idle");
  });

  const channel = pc.createDataChannel("sharpcam");
  state.channel = channel;
  channel.addEventListener("open", () => sendView());
  channel.addEventListener("message", (event) => onServerMessage(event.data));

  try {
    let transceiver;
    if (receiveOnly) {
      transceiver = pc.addTransceiver("video", { direction: "recvonly" });
    } else {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error(
          "camera access needs https:// or http://localhost; open the page on the server's " +
            "own machine (or through an SSH tunnel)",
        );
      }
      setStatus("asking for the camera");
      const width = Number(params.get("width") || 640);
      const height = Number(params.get("height") || 480);
      state.localStream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } },
        audio: false,
      });
      const track = state.localStream.getVideoTracks()[0];
      track.contentHint = "detail";
      transceiver = pc.addTransceiver(track, {
        direction: "sendrecv",
        sendEncodings: [{ ...SEND_PRESETS[state.send] }],
      });
    }
    preferCodec(transceiver, params.get("codec"));

    setStatus("gathering ICE candidates");
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc, ICE_GATHER_TIMEOUT_MS);

    setStatus("sending offer");
    const response = await fetch("/offer", {
      method: "POST",
      headers: apiHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        sdp: pc.localDescription.sdp,
        type: pc.localDescription.type,
        sharpen: state.sharpen,
        split: state.split,
      }),
    });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) {
      throw new Error(`server answered HTTP ${response.status}: ${body.error}`);
    }
    await pc.setRemoteDescription(body);
    setStatus("connecting");
    state.statsTimer = setInterval(updateStats, STATS_INTERVAL_MS);
  } catch (err) {
    setStatus(String(err.message || err), true);
    stop(false);
  }
}

function stop(resetStatus = true) {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  const pc = state.pc;
  state.pc = null;
  state.channel = null;
  state.lastStats = null;
  if (pc) {
    for (const t of pc.getTransceivers()) {
      if (t.stop) t.stop();
    }
  }
  if (state.localStream) {
    state.localStream.getTracks().forEach((t) => t.stop());
    state.localStream = null;
  }
  if (pc) pc.close();
  $("remote").srcObject = null;
  $("stage").classList.add("idle"); // keeps its size (the last stream's shape)
  clearFigures();
  $("start").disabled = false;
  $("stop").disabled = true;
  if (resetStatus) setStatus("stopped");
}

// --- controls: divider, toggle and what the page sends ------------------------------

async function applySend() {
  // change the camera stream's size and bitrate live, without renegotiating
  const sender = state.pc?.getSenders().find((s) => s.track && s.track.kind === "video");
  if (!sender) return;
  const parameters = sender.getParameters();
  if (!parameters.encodings || parameters.encodings.length === 0) return;
  const encoding = parameters.encodings[0];
  delete encoding.maxBitrate;
  Object.assign(encoding, SEND_PRESETS[state.send]);
  try {
    await sender.setParameters(parameters);
  } catch (err) {
    setStatus(`cannot change what is sent: ${err.message || err}`, true);
  }
}

function sendView() {
  const channel = state.channel;
  if (channel && channel.readyState === "open") {
    channel.send(JSON.stringify({ sharpen: state.sharpen, split: state.split }));
    state.lastSplitSent = performance.now();
  }
}

function sendViewSoon() {
  // at most one message per SPLIT_SEND_INTERVAL_MS while dragging, and always the last one
  clearTimeout(state.splitTimer);
  const wait = state.lastSplitSent + SPLIT_SEND_INTERVAL_MS - performance.now();
  if (wait <= 0) sendView();
  else state.splitTimer = setTimeout(sendView, wait);
}

function drawView() {
  const divider = $("divider");
  divider.style.left = `${state.split * 100}%`;
  divider.setAttribute("aria-valuenow", String(Math.round(state.split * 100)));
  $("stage").classList.toggle("off", !state.sharpen);
  $("sharpen").checked = state.sharpen;
}

function setSplit(split) {
  state.split = clamp(split);
  drawView();
  sendViewSoon();
}

function wireControls() {
  const stage = $("stage");
  const splitAt = (event) => {
    const box = stage.getBoundingClientRect();
    return (event.clientX - box.left) / box.width;
  };
  stage.addEventListener("pointerdown", (event) => {
    if (!state.sharpen) return;
    stage.setPointerCapture(event.pointerId);
    setSplit(splitAt(event));
  });
  stage.addEventListener("pointermove", (event) => {
    if (stage.hasPointerCapture(event.pointerId)) setSplit(splitAt(event));
  });
  $("divider").addEventListener("keydown", (event) => {
    const step = event.shiftKey ? 0.1 : 0.02;
    if (event.key === "ArrowLeft") setSplit(state.split - step);
    else if (event.key === "ArrowRight") setSplit(state.split + step);
    else return;
    event.preventDefault();
  });
  $("sharpen").addEventListener("change", (event) => {
    state.sharpen = event.target.checked;
    drawView();
    sendView();
  });
  $("remote").addEventListener("resize", keepVideoShape);
  $("send").addEventListener("change", (event) => {
    state.send = event.target.value;
    applySend();
  });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  window.addEventListener("pagehide", () => stop(false));
}

// --- figures -------------------------------------------------------------------------

function clearFigures() {
  // every live figure back to "–"; the model's name stays (it comes from /config)
  for (const dd of document.querySelectorAll("#figures dd")) {
    if (dd.id !== "fig-model") dd.textContent = "–";
  }
  state.serverMs = 0;
}

function keepVideoShape() {
  const video = $("remote");
  if (video.videoWidth && video.videoHeight) {
    $("stage").style.setProperty("--video-aspect", `${video.videoWidth} / ${video.videoHeight}`);
  }
}

// the model's name, then its tier when the server chose one ("…, tier fast"); a step-down
// note ("tier fast (stepped down from quality: …)") goes in the tooltip
function modelText(msg) {
  const model = msg.model || "–";
  return msg.tier ? `${model}, tier ${msg.tier}` : model;
}

function showModel(msg) {
  show("fig-model", modelText(msg));
  $("fig-model").title = msg.tier_note || "";
}

function onServerMessage(data) {
  if (!state.pc) return; // a late message after Stop
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  if (msg.type === "error") {
    setStatus(`server: ${msg.error}`, true);
    return;
  }
  if (msg.type !== "stats") return;
  showModel(msg);
  show("fig-server-fps", msg.fps, 1);
  show("fig-model-ms", msg.model_ms, 1);
  show("fig-model-p95", msg.model_ms_p95, 1);
  show("fig-server-ms", msg.server_ms, 1);
  show(
    "fig-server-size",
    msg.width_in ? `${msg.width_in}×${msg.height_in} → ${msg.width_out}×${msg.height_out}` : null,
  );
  show("fig-dropped", msg.dropped);
  show("fig-errors", msg.errors);
  state.serverMs = msg.server_ms;
}

async function updateStats() {
  const pc = state.pc;
  if (!pc) return;
  const report = await pc.getStats();
  if (state.pc !== pc) return; // stopped meanwhile: leave the figures cleared
  let inbound = null;
  let pair = null;
  let remoteInbound = null;
  const codecs = new Map();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    else if (s.type === "remote-inbound-rtp" && s.kind === "video") remoteInbound = s;
    else if (s.type === "codec") codecs.set(s.id, s.mimeType);
  });
  if (!inbound) return;
  const prev = state.lastStats;
  state.lastStats = inbound;

  const rttS = pair?.currentRoundTripTime ?? remoteInbound?.roundTripTime;
  show("fig-frames", inbound.framesDecoded);
  show("fig-rtt", rttS === undefined ? null : rttS * 1000, 1);
  show("fig-size", inbound.frameWidth ? `${inbound.frameWidth}×${inbound.frameHeight}` : null);
  show("fig-codec", (codecs.get(inbound.codecId) || "").replace("video/", "") || null);

  if (!prev) return;
  const dt = (inbound.timestamp - prev.timestamp) / 1000;
  const frames = inbound.framesDecoded - prev.framesDecoded;
  const emitted = inbound.jitterBufferEmittedCount - prev.jitterBufferEmittedCount;
  const fps = inbound.framesPerSecond ?? (dt > 0 ? frames / dt : null);
  const jitterMs =
    emitted > 0 ? ((inbound.jitterBufferDelay - prev.jitterBufferDelay) / emitted) * 1000 : null;
  const decodeMs =
    frames > 0 ? ((inbound.totalDecodeTime - prev.totalDecodeTime) / frames) * 1000 : null;
  show("fig-fps", fps, 1);
  show("fig-jitter", jitterMs, 1);
  show("fig-decode", decodeMs, 1);
  if (rttS !== undefined && jitterMs !== null && decodeMs !== null) {
    show("fig-delay", rttS * 1000 + (state.serverMs || 0) + jitterMs + decodeMs, 0);
  }
}

// --- start-up ------------------------------------------------------------------------

async function init() {
  wireControls();
  drawView();
  try {
    const response = await fetch("/config", { headers: apiHeaders() });
    state.config = await response.json();
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${state.config.error}`);
  } catch (err) {
    setStatus(`cannot use the sharpcam server: ${err.message || err}`, true);
    return;
  }
  const receiveOnly = state.config.mode === "receive";
  const scale = state.config.scale || 1;
  $("mode").textContent =
    (receiveOnly ? "receive-only: the server's source" : "relay: your camera") +
    (scale > 1 ? ` (×${scale} model)` : "");
  if (scale > 1) {
    $("label-left").textContent = `plain ×${scale} upscale`;
    $("label-right").textContent = `sharpcam ×${scale}`;
  }
  // a ×2 model is there for small streams: send half size unless the address says otherwise
  state.send = state.send || (scale > 1 ? "half" : "full");
  $("send").value = state.send;
  $("send-control").hidden = receiveOnly;
  showModel(state.config);
  setStatus("idle");
  if (params.get("autostart") !== "0") start();
}

init();
