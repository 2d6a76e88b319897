/*
 * Agent console (signalling protocol v1).
 *
 * Logs in over the REST API (session cookie), then keeps one WebSocket to /ws/v1/agent and one
 * standing WebRTC leg to the server while the agent is online: the microphone track is sent all
 * the time but disabled outside calls. Everything from the server is shown as text.
 */
(() => {
  "use strict";

  const ICE_GATHERING_TIMEOUT_MS = 3000;
  const ANSWER_TIMEOUT_MS = 10000;
  const NOTICE_MS = 4000;
  const CLOSE_REPLACED = 4001;
  const CLOSE_SESSION_ENDED = 4002;

  const PRESENCE_LABELS = {
    offline: "Offline",
    away: "Away",
    available: "Available",
    ringing: "Ringing",
    busy: "In a call",
  };

  const END_REASONS = {
    visitor_hangup: "the caller hung up",
    agent_hangup: "you hung up",
    failed: "the call failed",
    shutdown: "the server is restarting",
    no_answer: "no answer",
    abandoned: "the caller left",
    rejected: "rejected",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    loading: $("loading"),
    who: $("who"),
    agentName: $("agent-name"),
    presence: $("presence"),
    logout: $("logout"),
    login: $("login"),
    loginForm: $("login-form"),
    email: $("email"),
    password: $("password"),
    loginError: $("login-error"),
    loginSubmit: $("login-submit"),
    console: $("console"),
    goAvailable: $("go-available"),
    goAway: $("go-away"),
    status: $("status"),
    error: $("error"),
    disconnected: $("disconnected"),
    disconnectedText: $("disconnected-text"),
    reconnect: $("reconnect"),
    incoming: $("incoming"),
    rings: $("rings"),
    ringTemplate: $("ring-template"),
    call: $("call"),
    callButton: $("call-button"),
    callPage: $("call-page"),
    callTimer: $("call-timer"),
    mute: $("mute"),
    hangup: $("hangup"),
    notice: $("notice"),
    audio: $("remote-audio"),
  };

  const state = {
    ws: null,
    connected: false, // the socket said hello
    iceServers: [],
    presence: "offline",
    stream: null,
    pc: null,
    legState: null,
    negotiating: false,
    pendingAnswer: null, // { resolve, reject, timer } while an offer awaits its answer
    rings: new Map(), // call_id -> { element, button, pageUrl }
    call: null, // { id, started, timer }
    muted: false,
    loggingOut: false,
  };

  // --- small helpers ----------------------------------------------------------------------------

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  let noticeTimer = null;
  function showNotice(text, transient) {
    clearTimeout(noticeTimer);
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
    if (text && transient) {
      noticeTimer = setTimeout(() => showNotice(""), NOTICE_MS);
    }
  }

  function formatDuration(ms) {
    const seconds = Math.max(0, Math.floor(ms / 1000));
    return `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function text(value, max) {
    return typeof value === "string" ? value.slice(0, max || 500) : "";
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch {
        data = null;
      }
    }
    return { response, data };
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  // --- views ------------------------------------------------------------------------------------

  function showLogin(message) {
    ui.loading.hidden = true;
    ui.console.hidden = true;
    ui.who.hidden = true;
    ui.login.hidden = false;
    ui.loginError.textContent = message || "";
    ui.loginError.hidden = !message;
    ui.loginSubmit.disabled = false;
    ui.email.focus();
  }

  function showConsole(user) {
    ui.loading.hidden = true;
    ui.login.hidden = true;
    ui.console.hidden = false;
    ui.who.hidden = false;
    ui.agentName.textContent = text(user && user.name, 200);
    ui.disconnected.hidden = true;
    showError("");
    setPresence("offline");
  }

  function setPresence(presence) {
    state.presence = Object.hasOwn(PRESENCE_LABELS, presence) ? presence : "offline";
    ui.presence.dataset.presence = state.presence;
    ui.presence.textContent = PRESENCE_LABELS[state.presence];
    render();
  }

  function render() {
    const online = state.connected;
    const taking = ["available", "ringing", "busy"].includes(state.presence);
    ui.goAvailable.disabled = !online || state.negotiating || (taking && legUsable());
    ui.goAway.disabled = !online || state.presence === "away" || state.presence === "offline";
    ui.incoming.hidden = state.rings.size === 0;
  }

  // --- session ----------------------------------------------------------------------------------

  async function boot() {
    let result;
    try {
      result = await api("GET", "/api/v1/me");
    } catch {
      showLogin("Could not reach the server.");
      return;
    }
    if (result.response.ok && result.data && result.data.user) {
      showConsole(result.data.user);
      connect();
    } else {
      showLogin("");
    }
  }

  async function logIn(event) {
    event.preventDefault();
    ui.loginSubmit.disabled = true;
    ui.loginError.hidden = true;
    let result;
    try {
      result = await api("POST", "/api/v1/session", {
        email: ui.email.value.trim(),
        password: ui.password.value,
      });
    } catch {
      showLogin("Could not reach the server.");
      return;
    }
    if (result.response.ok && result.data && result.data.user) {
      ui.password.value = "";
      showConsole(result.data.user);
      connect();
    } else {
      const message = result.data && result.data.message ? text(result.data.message, 300) : "Login failed.";
      showLogin(message.charAt(0).toUpperCase() + message.slice(1) + (/[.!?]$/.test(message) ? "" : "."));
      ui.password.select();
    }
  }

  async function logOut() {
    state.loggingOut = true;
    const ws = state.ws;
    state.ws = null;
    state.connected = false;
    teardown();
    if (ws) {
      ws.close(1000);
    }
    try {
      await api("DELETE", "/api/v1/session");
    } catch {
      // The session ends on the server at its idle timeout anyway.
    }
    state.loggingOut = false;
    showLogin("You are logged out.");
  }

  // --- socket -----------------------------------------------------------------------------------

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/v1/agent`);
    state.ws = ws;
    state.connected = false;
    ui.disconnected.hidden = true;
    setStatus("Connecting…");
    ws.onmessage = (event) => {
      if (state.ws !== ws) {
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message !== null && typeof message === "object") {
        handle(message);
      }
    };
    ws.onclose = (event) => {
      if (state.ws === ws) {
        closed(event.code);
      }
    };
  }

  function closed(code) {
    state.ws = null;
    state.connected = false;
    teardown();
    setPresence("offline");
    if (state.loggingOut) {
      return;
    }
    if (code === CLOSE_SESSION_ENDED) {
      showLogin("Your session ended. Log in again.");
      return;
    }
    setStatus("");
    ui.disconnectedText.textContent =
      code === CLOSE_REPLACED
        ? "Disconnected: the console was opened in another tab or window."
        : "Disconnected from the call server.";
    ui.disconnected.hidden = false;
  }

  async function reconnect() {
    ui.reconnect.disabled = true;
    try {
      const result = await api("GET", "/api/v1/me");
      if (result.response.status === 401) {
        showLogin("Your session ended. Log in again.");
        return;
      }
      showConsole(result.data && result.data.user);
      connect();
    } catch {
      ui.disconnectedText.textContent = "Disconnected: the server cannot be reached.";
    } finally {
      ui.reconnect.disabled = false;
    }
  }

  function handle(message) {
    switch (message.type) {
      case "hello":
        state.connected = true;
        state.iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
        if (message.agent && typeof message.agent === "object") {
          ui.agentName.textContent = text(message.agent.name, 200);
          setPresence(message.agent.presence);
        }
        setStatus("Connected. Go available to take calls.");
        render();
        break;
      case "presence":
        setPresence(message.status);
        if (state.presence === "available" && !state.call) {
          setStatus("Available: waiting for calls.");
        } else if (state.presence === "away" && !state.negotiating) {
          setStatus("Away: you will not be rung.");
        }
        break;
      case "answer":
        if (state.pendingAnswer && typeof message.sdp === "string") {
          state.pendingAnswer.resolve(message.sdp);
        }
        break;
      case "leg_state":
        legStateChanged(text(message.state, 32));
        break;
      case "ring":
        addRing(message);
        break;
      case "ring_stopped":
        ringStopped(text(message.call_id, 64), text(message.reason, 64));
        break;
      case "call_state":
        if (message.state === "answered") {
          callAnswered(text(message.call_id, 64));
        } else if (message.state === "ended") {
          callEnded(text(message.call_id, 64), text(message.reason, 64), text(message.detail, 80));
        }
        break;
      case "error":
        serverError(message);
        break;
      default:
        break;
    }
  }

  function serverError(message) {
    const body = text(message.message, 300) || "The server refused a message.";
    showError(`Error: ${body}`);
    // An unusable SDP is reported without a ref: while an offer is pending it can only be that one.
    if (state.pendingAnswer && (message.ref === "offer" || message.code === "invalid_sdp")) {
      state.pendingAnswer.reject(new Error(body));
    }
    if (message.ref === "accept" || message.ref === "decline") {
      for (const ring of state.rings.values()) {
        for (const button of ring.element.querySelectorAll("button")) {
          button.disabled = false;
        }
      }
    }
  }

  // --- the standing media leg -------------------------------------------------------------------

  function legUsable() {
    return (
      state.pc !== null &&
      state.legState !== "failed" &&
      state.legState !== "closed" &&
      !["failed", "closed"].includes(state.pc.connectionState)
    );
  }

  function updateMicrophone() {
    if (!state.stream) {
      return;
    }
    for (const track of state.stream.getAudioTracks()) {
      track.enabled = state.call !== null && !state.muted;
    }
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

  function exchangeOffer(sdp) {
    return new Promise((resolve, reject) => {
      const finish = (fn, value) => {
        clearTimeout(pending.timer);
        if (state.pendingAnswer === pending) {
          state.pendingAnswer = null;
        }
        fn(value);
      };
      const pending = {
        resolve: (value) => finish(resolve, value),
        reject: (error) => finish(reject, error),
        timer: setTimeout(() => pending.reject(new Error("the server did not answer")), ANSWER_TIMEOUT_MS),
      };
      state.pendingAnswer = pending;
      if (!send({ type: "offer", sdp })) {
        pending.reject(new Error("not connected"));
      }
    });
  }

  function closeLeg() {
    if (state.pc) {
      state.pc.ontrack = null;
      state.pc.onconnectionstatechange = null;
      state.pc.close();
      state.pc = null;
    }
    state.legState = null;
    ui.audio.srcObject = null;
  }

  async function goAvailable() {
    if (state.negotiating || !state.connected) {
      return;
    }
    showError("");
    if (legUsable()) {
      send({ type: "presence", status: "available" });
      return;
    }
    state.negotiating = true;
    render();
    setStatus("Connecting your microphone…");
    try {
      if (!state.stream || state.stream.getAudioTracks().every((t) => t.readyState === "ended")) {
        try {
          state.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        } catch (error) {
          throw new Error(
            error && error.name === "NotAllowedError"
              ? "Microphone access was denied. Allow the microphone to take calls."
              : error && error.name === "NotFoundError"
                ? "No microphone was found."
                : "The microphone could not be used.",
          );
        }
      }
      updateMicrophone();
      closeLeg();
      const pc = new RTCPeerConnection({ iceServers: state.iceServers });
      state.pc = pc;
      pc.ontrack = (event) => {
        ui.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
        const playing = ui.audio.play();
        if (playing) {
          playing.catch(() => {});
        }
      };
      pc.onconnectionstatechange = () => {
        if (pc === state.pc && pc.connectionState === "failed") {
          legStateChanged("failed");
        }
      };
      for (const track of state.stream.getAudioTracks()) {
        pc.addTrack(track, state.stream);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      setStatus("Connecting your audio…");
      const answer = await exchangeOffer(pc.localDescription.sdp);
      if (pc !== state.pc) {
        return;
      }
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      send({ type: "presence", status: "available" });
    } catch (error) {
      closeLeg();
      setStatus("");
      showError(`Could not go available: ${error && error.message ? error.message : error}`);
    } finally {
      state.negotiating = false;
      render();
    }
  }

  function goAway() {
    send({ type: "presence", status: "away" });
  }

  function legStateChanged(legState) {
    state.legState = legState;
    if (legState === "failed") {
      showError("Your audio connection failed. Click Go available to reconnect it.");
      setStatus("");
    } else if (legState === "connected") {
      showError("");
    }
    render();
  }

  function teardown() {
    if (state.pendingAnswer) {
      state.pendingAnswer.reject(new Error("disconnected"));
    }
    for (const callId of [...state.rings.keys()]) {
      removeRing(callId);
    }
    stopCallTimer();
    state.call = null;
    state.muted = false;
    ui.call.hidden = true;
    closeLeg();
    if (state.stream) {
      for (const track of state.stream.getTracks()) {
        track.stop();
      }
      state.stream = null;
    }
    render();
  }

  // --- ringing ----------------------------------------------------------------------------------

  const ringer = {
    context: null,
    timer: null,
    start() {
      if (this.timer !== null) {
        return;
      }
      const beep = () => {
        try {
          this.context = this.context || new AudioContext();
          const now = this.context.currentTime;
          for (const offset of [0, 0.25]) {
            const oscillator = this.context.createOscillator();
            const gain = this.context.createGain();
            oscillator.frequency.value = 880;
            gain.gain.value = 0.06;
            oscillator.connect(gain).connect(this.context.destination);
            oscillator.start(now + offset);
            oscillator.stop(now + offset + 0.15);
          }
        } catch {
          // A ring sound is a nicety: no audio output is no reason to miss the call.
        }
      };
      beep();
      this.timer = setInterval(beep, 2000);
    },
    stop() {
      clearInterval(this.timer);
      this.timer = null;
    },
  };

  function addRing(message) {
    const callId = text(message.call_id, 64);
    if (!callId || state.rings.has(callId)) {
      return;
    }
    const buttonName = text(message.button && message.button.name, 200) || "Call button";
    const pageUrl = text(message.visitor && message.visitor.page_url, 2048);
    const element = ui.ringTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.callId = callId;
    element.querySelector(".ring-button").textContent = buttonName;
    element.querySelector(".ring-url").textContent = pageUrl || "(unknown page)";
    const accept = element.querySelector(".accept");
    const decline = element.querySelector(".decline");
    accept.setAttribute("aria-label", `Accept call from ${buttonName}`);
    decline.setAttribute("aria-label", `Decline call from ${buttonName}`);
    accept.addEventListener("click", () => {
      accept.disabled = true;
      decline.disabled = true;
      send({ type: "accept", call_id: callId });
    });
    decline.addEventListener("click", () => {
      accept.disabled = true;
      decline.disabled = true;
      send({ type: "decline", call_id: callId });
    });
    state.rings.set(callId, { element, buttonName, pageUrl });
    ui.rings.append(element);
    showNotice("");
    render();
    ringer.start();
    // Announced, not focused: a keystroke meant for something else must not accept a call.
    if (!state.call) {
      setStatus(`Incoming call: ${buttonName}.`);
    }
  }

  function removeRing(callId) {
    const ring = state.rings.get(callId);
    if (!ring) {
      return null;
    }
    ring.element.remove();
    state.rings.delete(callId);
    if (state.rings.size === 0) {
      ringer.stop();
    }
    render();
    return ring;
  }

  function ringStopped(callId, reason) {
    const ring = removeRing(callId);
    if (!ring) {
      return;
    }
    if (reason === "answered_elsewhere") {
      showNotice("Answered by another agent.", true);
    } else if (reason === "ended") {
      showNotice("Missed call: the caller hung up or nobody answered in time.", true);
    }
  }

  // --- the call ---------------------------------------------------------------------------------

  function stopCallTimer() {
    if (state.call && state.call.timer !== null) {
      clearInterval(state.call.timer);
      state.call.timer = null;
    }
  }

  function callAnswered(callId) {
    const ring = removeRing(callId);
    state.call = { id: callId, started: Date.now(), timer: null };
    state.muted = false;
    ui.mute.setAttribute("aria-pressed", "false");
    ui.call.dataset.callId = callId;
    ui.callButton.textContent = ring ? ring.buttonName : "";
    ui.callPage.textContent = ring && ring.pageUrl ? ring.pageUrl : "";
    ui.callTimer.textContent = formatDuration(0);
    state.call.timer = setInterval(() => {
      if (state.call) {
        ui.callTimer.textContent = formatDuration(Date.now() - state.call.started);
      }
    }, 1000);
    ui.call.hidden = false;
    showNotice("");
    showError("");
    setStatus("In call.");
    updateMicrophone();
    ui.hangup.focus();
  }

  function callEnded(callId, reason, detail) {
    removeRing(callId);
    if (!state.call || state.call.id !== callId) {
      return;
    }
    const hadFocus = ui.call.contains(document.activeElement) || document.activeElement === document.body;
    stopCallTimer();
    state.call = null;
    state.muted = false;
    ui.call.hidden = true;
    delete ui.call.dataset.callId;
    updateMicrophone();
    let why = END_REASONS[reason] || reason || "ended";
    if (reason === "failed" && detail) {
      why = `${why}: ${detail.replaceAll("_", " ")}`;
    }
    showNotice(`Call ended (${why}).`);
    setStatus(state.presence === "available" ? "Available: waiting for calls." : "");
    if (hadFocus) {
      ui.notice.focus();
    }
  }

  function toggleMute() {
    if (!state.call) {
      return;
    }
    state.muted = !state.muted;
    ui.mute.setAttribute("aria-pressed", String(state.muted));
    updateMicrophone();
    setStatus(state.muted ? "In call. Your microphone is muted." : "In call.");
  }

  function hangUp() {
    if (state.call) {
      send({ type: "hangup", call_id: state.call.id });
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  ui.loginForm.addEventListener("submit", logIn);
  ui.logout.addEventListener("click", logOut);
  ui.reconnect.addEventListener("click", reconnect);
  ui.goAvailable.addEventListener("click", goAvailable);
  ui.goAway.addEventListener("click", goAway);
  ui.mute.addEventListener("click", toggleMute);
  ui.hangup.addEventListener("click", hangUp);
  boot();
})();
