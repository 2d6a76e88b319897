/*
 * Call button widget (signalling protocol v1).
 *
 * Embed on any page:
 *   <script src="https://SERVER/widget.js" data-button="cb_KEY" async></script>
 *
 * It renders a call button into a Shadow DOM attached to its own element (so the host page's CSS
 * cannot reach it), styled with a constructable stylesheet only: no inline <style>, no style
 * attributes, so it works under a host Content-Security-Policy that allows only this script and
 * the server's origin (script-src + connect-src). Everything it shows that comes from the server is
 * set as text, never as HTML. It defines no globals.
 */
(() => {
  "use strict";

  const KEY_PATTERN = /^cb_[A-Za-z0-9_-]{16,64}$/;
  const ICE_GATHERING_TIMEOUT_MS = 3000;
  const HELLO_TIMEOUT_MS = 10000;
  const MAX_PAGE_URL = 2048;

  const TEXT = {
    connecting: "Connecting…",
    ringing: "Ringing… Waiting for someone to answer.",
    inCall: "In call",
    noAgent: "No one is available to take your call right now.",
    declined: "Nobody could take your call. Please try again later.",
    noAnswer: "No one answered. Please try again later.",
    agentHangup: "The agent ended the call.",
    ended: "Call ended.",
    failed: "The call failed.",
    shutdown: "The service is restarting. Please call again in a moment.",
    micDenied: "Microphone access was denied. Allow the microphone to call.",
    micMissing: "No microphone was found.",
    micFailed: "The microphone could not be used.",
    unsupported: "This browser cannot make calls from this page.",
    unreachable: "Could not reach the call service.",
    connectionLost: "The connection to the call service was lost.",
    mediaLost: "The call failed. The audio connection was lost.",
  };

  const FAILURE_DETAILS = {
    offer_refused: "Your browser's audio settings were refused.",
    visitor_media_failed: "The audio connection was lost.",
    agent_media_failed: "The agent's audio connection was lost.",
  };

  const CSS = `
:host { all: initial !important; }
.cb {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  display: flex; flex-direction: column; align-items: flex-end; gap: 12px;
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #17212b; text-align: left;
}
.cb *, .cb *::before, .cb *::after { box-sizing: border-box; }
.fab {
  width: 60px; height: 60px; border-radius: 50%; border: 0; padding: 0; margin: 0;
  display: grid; place-items: center; cursor: pointer;
  background: #1a7f4b; color: #fff;
  box-shadow: 0 4px 14px rgba(0, 0, 0, .25);
  transition: transform .15s ease, background-color .15s ease;
}
.fab:hover { background: #166c40; transform: scale(1.05); }
.fab.unavailable { background: #6b7580; }
.fab svg { width: 28px; height: 28px; fill: currentColor; }
button:focus-visible { outline: 3px solid #1f6feb; outline-offset: 3px; }
.panel {
  width: min(320px, calc(100vw - 40px)); padding: 16px; border-radius: 14px;
  background: #fff; border: 1px solid #d5dbe1;
  box-shadow: 0 8px 28px rgba(0, 0, 0, .2);
}
.title { margin: 0 0 6px; font-weight: 600; font-size: 16px; }
.status { margin: 0; }
.recording { margin: 8px 0 0; font-size: 13px; color: #5b6773; }
.recording::before {
  content: ""; display: inline-block; width: 8px; height: 8px; margin-right: 6px;
  border-radius: 50%; background: #c62828; vertical-align: 1px;
}
.timer { margin: 6px 0 0; font-variant-numeric: tabular-nums; font-size: 22px; font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 14px; }
.controls button {
  flex: 1 1 auto; min-height: 40px; padding: 8px 14px; border-radius: 20px; cursor: pointer;
  font: inherit; font-weight: 600; border: 1px solid #b8c2cc; background: #f4f6f8; color: #17212b;
}
.controls button:hover { background: #e6eaee; }
.controls .hangup { background: #c62828; border-color: #c62828; color: #fff; }
.controls .hangup:hover { background: #a61f1f; }
.controls .again { background: #1a7f4b; border-color: #1a7f4b; color: #fff; }
.controls .mute[aria-pressed="true"] { background: #17212b; border-color: #17212b; color: #fff; }
.cb[data-phase="ringing"] .status::before {
  content: ""; display: inline-block; width: 9px; height: 9px; margin-right: 8px;
  border-radius: 50%; background: #1a7f4b; animation: cb-pulse 1s ease-in-out infinite;
}
@keyframes cb-pulse { 50% { opacity: .2; } }
@media (prefers-reduced-motion: reduce) {
  .fab { transition: none; }
  .cb[data-phase="ringing"] .status::before { animation: none; }
}
.sr {
  position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; border: 0;
  overflow: hidden; clip-path: inset(50%); white-space: nowrap;
}
[hidden] { display: none !important; }
`;

  const PHONE_ICON =
    "M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 " +
    "1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 " +
    "1 0 0 1-.25 1z";

  function findScript() {
    for (const tag of document.querySelectorAll("script[data-button][src]")) {
      if (/\/widget\.js(?:[?#]|$)/.test(tag.src)) {
        return tag;
      }
    }
    return null;
  }

  const script = document.currentScript || findScript();
  if (!script || !script.src) {
    console.warn("callbutton: cannot find the widget's script tag (data-button attribute)");
    return;
  }
  const key = script.getAttribute("data-button") || "";
  if (!KEY_PATTERN.test(key)) {
    console.warn("callbutton: the data-button attribute is not a call button key");
    return;
  }
  const serverOrigin = new URL(script.src, document.baseURI).origin;
  const socketUrl =
    serverOrigin.replace(/^http/, "ws") + "/ws/v1/visitor?key=" + encodeURIComponent(key);

  // --- DOM --------------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function phoneIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", PHONE_ICON);
    svg.append(path);
    return svg;
  }

  const host = document.createElement("callbutton-widget");
  const shadow = host.attachShadow({ mode: "open" });
  if ("adoptedStyleSheets" in Document.prototype && typeof CSSStyleSheet === "function") {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    // Older browsers: a <style> element (blocked by a strict style-src, but nothing else works).
    shadow.append(el("style", {}, CSS));
  }

  const ui = {
    root: el("div", { class: "cb", "data-phase": "idle" }),
    panel: el("section", { class: "panel", hidden: "" }),
    title: el("p", { class: "title" }),
    status: el("p", { class: "status" }),
    recording: el("p", { class: "recording", hidden: "" }),
    timer: el("p", { class: "timer", role: "timer", hidden: "", "aria-label": "Call duration" }),
    mute: el("button", { type: "button", class: "mute", "aria-pressed": "false" }, "Mute"),
    hangup: el("button", { type: "button", class: "hangup" }, "Hang up"),
    again: el("button", { type: "button", class: "again" }, "Call again"),
    close: el("button", { type: "button", class: "close" }, "Close"),
    fab: el("button", { type: "button", class: "fab" }, phoneIcon()),
    live: el("div", { class: "sr", "aria-live": "polite", role: "status" }),
    audio: el("audio", { autoplay: "" }),
  };
  ui.panel.append(
    ui.title,
    ui.status,
    ui.recording,
    ui.timer,
    el("div", { class: "controls" }, ui.mute, ui.hangup, ui.again, ui.close),
  );
  ui.root.append(ui.panel, ui.fab, ui.live, ui.audio);
  shadow.append(ui.root);

  // --- state ------------------------------------------------------------------------------------

  let buttonName = "Support";
  let recordingNotice = null; // the button's notice when its calls are recorded
  let unavailableMessage = null; // set when the button cannot be used from this page
  let phase = "idle";
  let current = null; // the call in progress: { ws, pc, stream, callId, sent, over, timer }

  function setLabel() {
    const label = `Call ${buttonName}`;
    ui.fab.setAttribute("aria-label", label);
    ui.fab.title = label;
    ui.panel.setAttribute("aria-label", label);
    ui.title.textContent = buttonName;
  }

  function show(nextPhase, message) {
    const focused = shadow.activeElement;
    phase = nextPhase;
    ui.root.setAttribute("data-phase", phase);
    const active = phase === "connecting" || phase === "ringing" || phase === "in-call";
    ui.panel.hidden = phase === "idle";
    ui.fab.hidden = phase !== "idle";
    ui.status.textContent = message || "";
    ui.timer.hidden = phase !== "in-call";
    // Visitors are told a call is recorded before it connects, and while it lasts.
    ui.recording.hidden = !active || recordingNotice === null;
    ui.recording.textContent = recordingNotice || "";
    ui.mute.hidden = phase !== "ringing" && phase !== "in-call";
    ui.hangup.hidden = !active;
    ui.again.hidden = phase !== "ended" || unavailableMessage !== null;
    ui.close.hidden = phase !== "ended";
    if (!active) {
      ui.mute.setAttribute("aria-pressed", "false");
    }
    ui.live.textContent = message || "";
    if (focused && (focused.hidden || focused.closest("[hidden]"))) {
      // The control that had keyboard focus disappeared: move focus to one that is visible.
      const target = [ui.hangup, ui.again, ui.close, ui.fab].find((b) => !b.hidden && !b.closest("[hidden]"));
      if (target) {
        target.focus();
      }
    }
  }

  function learnRecording(button) {
    const recording = button && button.recording;
    if (!recording || typeof recording !== "object") {
      return;
    }
    recordingNotice =
      recording.enabled === true ? String(recording.notice || "This call is recorded.").slice(0, 500) : null;
  }

  function endMessage(reason, detail) {
    switch (reason) {
      case "rejected":
        return detail === "no_agent_available" ? TEXT.noAgent : TEXT.declined;
      case "no_answer":
        return TEXT.noAnswer;
      case "agent_hangup":
        return TEXT.agentHangup;
      case "failed": {
        if (!detail) {
          return TEXT.failed;
        }
        return `${TEXT.failed} ${FAILURE_DETAILS[detail] || `(${String(detail).slice(0, 80)})`}`;
      }
      case "shutdown":
        return TEXT.shutdown;
      default: // visitor_hangup, abandoned
        return TEXT.ended;
    }
  }

  function micMessage(error) {
    const name = error && error.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return TEXT.micDenied;
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return TEXT.micMissing;
    }
    return TEXT.micFailed;
  }

  function pageUrl() {
    if (!/^https?:$/.test(location.protocol)) {
      return undefined;
    }
    const full = location.href;
    return full.length <= MAX_PAGE_URL ? full : (location.origin + location.pathname).slice(0, MAX_PAGE_URL);
  }

  function formatDuration(ms) {
    const seconds = Math.max(0, Math.floor(ms / 1000));
    const mm = String(Math.floor(seconds / 60)).padStart(2, "0");
    const ss = String(seconds % 60).padStart(2, "0");
    return `${mm}:${ss}`;
  }

  // --- the call ---------------------------------------------------------------------------------

  function send(call, message) {
    if (call.ws && call.ws.readyState === WebSocket.OPEN) {
      call.ws.send(JSON.stringify(message));
    }
  }

  function release(call) {
    if (call.timer !== null) {
      clearInterval(call.timer);
      call.timer = null;
    }
    if (call.stream) {
      for (const track of call.stream.getTracks()) {
        track.stop();
      }
    }
    if (call.pc) {
      call.pc.ontrack = null;
      call.pc.onconnectionstatechange = null;
      call.pc.close();
    }
    if (call.ws) {
      call.ws.onmessage = null;
      call.ws.onclose = null;
      if (call.ws.readyState === WebSocket.CONNECTING || call.ws.readyState === WebSocket.OPEN) {
        call.ws.close(1000);
      }
    }
    ui.audio.srcObject = null;
  }

  /** End ``call`` here (once): release everything it holds and show ``message``. */
  function finish(call, message) {
    if (call.over) {
      return;
    }
    call.over = true;
    release(call);
    if (current === call) {
      current = null;
      show("ended", message);
    }
  }

  function hangUp() {
    const call = current;
    if (!call) {
      return;
    }
    if (call.sent) {
      // The socket delivers this before its close frame, so the server records who hung up.
      send(call, { type: "hangup" });
    }
    finish(call, TEXT.ended);
  }

  function waitForIceGathering(pc) {
    // Vanilla ICE: the server wants every candidate in the offer (it does not take trickled ones).
    if (pc.iceGatheringState === "complete") {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timeout);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", candidate);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") {
          done();
        }
      };
      const candidate = (event) => {
        if (!event.candidate) {
          done();
        }
      };
      const timeout = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", candidate);
    });
  }

  function openSocket(call) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(socketUrl);
      call.ws = ws;
      let greeted = false;
      const timeout = setTimeout(() => reject(new Error("no hello")), HELLO_TIMEOUT_MS);
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message === null || typeof message !== "object") {
          return;
        }
        if (!greeted) {
          if (message.type === "hello") {
            greeted = true;
            clearTimeout(timeout);
            resolve(message);
          }
          return;
        }
        onMessage(call, message);
      };
      ws.onclose = () => {
        clearTimeout(timeout);
        if (!greeted) {
          reject(new Error("closed"));
        } else {
          finish(call, phase === "connecting" ? TEXT.unreachable : TEXT.connectionLost);
        }
      };
    });
  }

  function onMessage(call, message) {
    if (call.over) {
      return;
    }
    switch (message.type) {
      case "call_state":
        if (typeof message.call_id === "string") {
          call.callId = message.call_id;
        }
        if (message.state === "queued") {
          show("ringing", TEXT.ringing);
        } else if (message.state === "answered") {
          answered(call);
        } else if (message.state === "ended") {
          finish(call, endMessage(message.reason, message.detail));
        }
        break;
      case "answer":
        if (call.pc && typeof message.sdp === "string") {
          call.pc.setRemoteDescription({ type: "answer", sdp: message.sdp }).catch(() => {
            send(call, { type: "hangup" });
            finish(call, TEXT.failed);
          });
        }
        break;
      case "error":
        if (phase === "connecting") {
          const detail = typeof message.message === "string" ? ` (${message.message.slice(0, 200)})` : "";
          finish(call, TEXT.failed + detail);
        } else {
          console.warn("callbutton: the server refused a message:", message.code, message.message);
        }
        break;
      default:
        break;
    }
  }

  function answered(call) {
    show("in-call", TEXT.inCall);
    const started = Date.now();
    ui.timer.textContent = formatDuration(0);
    call.timer = setInterval(() => {
      ui.timer.textContent = formatDuration(Date.now() - started);
    }, 1000);
  }

  async function startCall() {
    if (current) {
      return;
    }
    if (unavailableMessage !== null) {
      show("ended", unavailableMessage);
      return;
    }
    const call = { ws: null, pc: null, stream: null, callId: null, sent: false, over: false, timer: null };
    current = call;
    show("connecting", TEXT.connecting);

    if (!navigator.mediaDevices || typeof RTCPeerConnection !== "function") {
      finish(call, TEXT.unsupported);
      return;
    }
    try {
      call.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      finish(call, micMessage(error));
      return;
    }
    if (call.over) {
      release(call); // hung up while the browser asked for the microphone
      return;
    }

    let hello;
    try {
      hello = await openSocket(call);
    } catch {
      finish(call, TEXT.unreachable);
      return;
    }
    if (call.over) {
      return;
    }
    // The socket's greeting has the button as it is now: say so if this call will be recorded.
    learnRecording(hello.button);
    show(phase, ui.status.textContent);

    try {
      const iceServers = Array.isArray(hello.ice_servers) ? hello.ice_servers : [];
      const pc = new RTCPeerConnection({ iceServers });
      call.pc = pc;
      pc.ontrack = (event) => {
        ui.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
        const playing = ui.audio.play();
        if (playing) {
          playing.catch(() => {});
        }
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed") {
          send(call, { type: "hangup" });
          finish(call, TEXT.mediaLost);
        }
      };
      for (const track of call.stream.getAudioTracks()) {
        pc.addTrack(track, call.stream);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (call.over) {
        return;
      }
      send(call, { type: "call", sdp: pc.localDescription.sdp, page_url: pageUrl() });
      call.sent = true;
    } catch (error) {
      console.warn("callbutton: could not set up the call:", error);
      finish(call, TEXT.failed);
    }
  }

  ui.fab.addEventListener("click", () => {
    startCall();
  });
  ui.hangup.addEventListener("click", hangUp);
  ui.again.addEventListener("click", () => {
    show("idle", "");
    startCall();
  });
  ui.close.addEventListener("click", () => {
    show("idle", "");
    ui.fab.focus();
  });
  ui.mute.addEventListener("click", () => {
    if (!current || !current.stream) {
      return;
    }
    const muted = ui.mute.getAttribute("aria-pressed") !== "true";
    for (const track of current.stream.getAudioTracks()) {
      track.enabled = !muted;
    }
    ui.mute.setAttribute("aria-pressed", String(muted));
    ui.live.textContent = muted ? "Microphone muted" : "Microphone on";
  });
  window.addEventListener("pagehide", () => {
    if (current) {
      hangUp();
    }
  });

  // --- start ------------------------------------------------------------------------------------

  async function lookUp() {
    let response;
    try {
      response = await fetch(`${serverOrigin}/api/v1/widget/${encodeURIComponent(key)}`, {
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      console.warn("callbutton: could not reach the call service; the button will try when clicked");
      return;
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 404) {
      console.warn("callbutton: no call button has this key; the button is hidden");
      host.remove();
      return;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message : `HTTP ${response.status}`;
      console.warn("callbutton: this call button cannot be used here:", message);
      unavailableMessage = `The call button is unavailable: ${message.slice(0, 200)}.`;
      ui.fab.classList.add("unavailable");
      ui.fab.setAttribute("aria-label", `Call ${buttonName} (unavailable)`);
      return;
    }
    if (body && body.button && typeof body.button.name === "string" && body.button.name) {
      buttonName = body.button.name.slice(0, 100);
      setLabel();
    }
    if (body) {
      learnRecording(body.button);
    }
    if (body && body.agents_available === false) {
      ui.fab.classList.add("unavailable");
      ui.fab.title = `Call ${buttonName} (no one is available right now)`;
    }
  }

  function mount() {
    setLabel();
    show("idle", "");
    ui.fab.hidden = true; // shown once the lookup says the button exists
    document.body.append(host);
    lookUp().finally(() => {
      if (phase === "idle") {
        ui.fab.hidden = false;
      }
    });
  }

  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount, { once: true });
  }
})();
