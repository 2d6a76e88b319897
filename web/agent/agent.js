/*
 * Agent console (signalling protocol v1).
 *
 * Logs in over the REST API (session cookie), then keeps one WebSocket to /ws/v1/agent and one
 * standing WebRTC leg to the server while the agent is online: the microphone track is sent all
 * the time but disabled outside calls. The console may be open in several tabs: each has its own
 * socket and leg, all of them are rung, and a call lives in the tab that accepted it.
 *
 * Around the calls: the caller's details and notes, the agent's own call history, the
 * organisation's open callback requests and single-use call links. Everything from the server is
 * shown as text.
 */
(() => {
  "use strict";

  const ICE_GATHERING_TIMEOUT_MS = 3000;
  const ANSWER_TIMEOUT_MS = 10000;
  const NOTICE_MS = 4000;
  // The call row's end is written a moment after the socket says so; look twice.
  const HISTORY_REFRESH_MS = [400, 2500];
  const CLOSE_REPLACED = 4001;
  const CLOSE_SESSION_ENDED = 4002;
  // The server stopped (1001), failed or lost its link to the node carrying this console (1012),
  // or the connection dropped (1006): the console reconnects by itself, landing on a live server.
  const RECONNECT_ON = new Set([1001, 1006, 1011, 1012, 1013]);
  const RECONNECT_FIRST_MS = 1000;
  const RECONNECT_MAX_MS = 30000;

  const PRESENCE_LABELS = {
    offline: "Offline",
    away: "Away",
    available: "Available",
    ringing: "Ringing",
    busy: "In a call",
    wrap_up: "Wrap-up",
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

  const OUTCOMES = {
    answered: "Answered",
    missed: "Missed",
    abandoned: "Caller left",
    no_answer: "No answer",
  };

  const CALLBACK_REASONS = {
    closed: "Called while closed",
    max_wait: "Waited too long",
    no_agent: "No one was available",
    visitor: "Asked to be called back",
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
    otherTab: $("other-tab"),
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
    details: $("call-details"),
    detailsTitle: $("call-details-title"),
    callVisitor: $("call-visitor"),
    notesForm: $("notes-form"),
    notes: $("notes"),
    notesSave: $("notes-save"),
    notesStatus: $("notes-status"),
    notesError: $("notes-error"),
    callClips: $("call-clips"),
    callClipList: $("call-clip-list"),
    clipsStatus: $("clips-status"),
    callbackList: $("callback-list"),
    callbacksEmpty: $("callbacks-empty"),
    callbacksStatus: $("callbacks-status"),
    callbacksError: $("callbacks-error"),
    callbackTemplate: $("callback-template"),
    newLink: $("new-link"),
    linkResult: $("link-result"),
    linkFor: $("link-for"),
    linkUrl: $("link-url"),
    linkCopy: $("link-copy"),
    linkExpiry: $("link-expiry"),
    linkStatus: $("link-status"),
    linkError: $("link-error"),
    historyRefresh: $("history-refresh"),
    historyEmpty: $("history-empty"),
    historyTable: $("history-table"),
    historyError: $("history-error"),
    audio: $("remote-audio"),
  };

  const state = {
    ws: null,
    connected: false, // the socket said hello
    iceServers: [],
    presence: "offline",
    wantsAvailable: false, // the agent's own choice, shared by every tab and kept across a reload
    resumeAvailable: false, // reconnecting after a lost connection, to go available again once back
    reconnectDelay: RECONNECT_FIRST_MS,
    reconnectTimer: null,
    autoAvailable: false, // this socket already negotiated its leg by itself once
    wrapUp: null, // { until, timer } while wrapping up
    stream: null,
    pc: null,
    legState: null,
    negotiating: false,
    generation: 0, // goes up each time the socket is lost: negotiations begun before are dropped
    pendingAnswer: null, // { resolve, reject, timer } while an offer awaits its answer
    rings: new Map(), // call_id -> { element, buttonName, pageUrl, visitor, direction }
    accepted: new Set(), // calls this tab sent "accept" for: the others are answered in another tab
    lastAccept: null,
    call: null, // { id, started, timer }
    otherTabCall: null, // the id of a call this agent is in on another socket
    details: null, // { callId, ring }: whose notes the notes form saves, and the ring it came from
    announced: null, // { callId, kind, caller }: the ring the status line last announced
    muted: false,
    loggingOut: false,
    callbacks: new Map(), // id -> { data, element }
    callClips: new Map(), // call id -> Map(clip id -> clip): what callers sent with their calls
    callbackClips: new Map(), // callback request id -> Map(clip id -> clip)
    doneCallbacks: new Set(),
    historyTimers: [],
  };

  // --- small helpers ----------------------------------------------------------------------------

  function setStatus(message) {
    ui.status.textContent = message;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  function showAlert(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  let noticeTimer = null;
  function showNotice(message, transient) {
    clearTimeout(noticeTimer);
    ui.notice.textContent = message;
    ui.notice.hidden = !message;
    if (message && transient) {
      noticeTimer = setTimeout(() => showNotice(""), NOTICE_MS);
    }
  }

  function formatDuration(ms) {
    const seconds = Math.max(0, Math.floor(ms / 1000));
    return `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function formatTime(iso) {
    const date = new Date(typeof iso === "string" ? iso : NaN);
    if (Number.isNaN(date.getTime())) {
      return "";
    }
    return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function text(value, max) {
    return typeof value === "string" ? value.slice(0, max || 500) : "";
  }

  function count(value) {
    return Number.isInteger(value) && value >= 0 ? value : null;
  }

  /** A server message as a sentence: capitalised, with a full stop. */
  function sentence(value, fallback) {
    const message = text(value, 300) || fallback;
    return message.charAt(0).toUpperCase() + message.slice(1) + (/[.!?]$/.test(message) ? "" : ".");
  }

  function earlierCalls(value) {
    const n = count(value);
    if (n === null) {
      return "";
    }
    return n === 0 ? "First call" : `${n} earlier call${n === 1 ? "" : "s"}`;
  }

  /** Fills a <dl> with [term, value] pairs, skipping empty values. */
  function fillList(list, pairs) {
    list.replaceChildren();
    for (const [term, value, name] of pairs) {
      if (!value) {
        continue;
      }
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = name;
      list.append(dt, dd);
    }
    list.hidden = list.childElementCount === 0;
  }

  function visitorPairs(visitor, direction) {
    return [
      ["Name", text(visitor.name, 200), "name"],
      ["Email", text(visitor.email, 320), "email"],
      ["Phone", text(visitor.phone, 32), "phone"],
      ["History", earlierCalls(visitor.earlier_calls), "history"],
      ["Direction", direction === "outbound" ? "Call back (outbound)" : "", "direction"],
    ];
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

  /** The error message of a failed API answer (``{"error": code, "message": text}``). */
  function apiError(result, fallback) {
    return sentence(result && result.data && result.data.message, fallback);
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
    resetPanels();
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

  /** Forget what the last user saw (after logging out, another may log in). */
  function resetPanels() {
    hideDetails();
    showOtherTab(null);
    for (const id of [...state.callbacks.keys()]) {
      removeCallback(id);
    }
    state.doneCallbacks.clear();
    state.callClips.clear();
    state.callbackClips.clear();
    ui.clipsStatus.textContent = "";
    showAlert(ui.callbacksError, "");
    ui.callbacksStatus.textContent = "";
    ui.linkResult.hidden = true;
    ui.linkUrl.value = "";
    ui.linkStatus.textContent = "";
    showAlert(ui.linkError, "");
    for (const timer of state.historyTimers) {
      clearTimeout(timer);
    }
    state.historyTimers = [];
    renderHistory([]);
    showAlert(ui.historyError, "");
  }

  function setPresence(presence, wrapUpSeconds) {
    state.presence = Object.hasOwn(PRESENCE_LABELS, presence) ? presence : "offline";
    ui.presence.dataset.presence = state.presence;
    stopWrapUp();
    if (state.presence === "wrap_up" && typeof wrapUpSeconds === "number" && wrapUpSeconds >= 0) {
      startWrapUp(wrapUpSeconds);
    } else {
      ui.presence.textContent = PRESENCE_LABELS[state.presence];
    }
    render();
  }

  // The server sends the wrap-up left once; the console counts it down until the next presence.
  function startWrapUp(seconds) {
    const wrapUp = { until: Date.now() + seconds * 1000, timer: null };
    const tick = () => {
      const left = Math.max(0, Math.ceil((wrapUp.until - Date.now()) / 1000));
      ui.presence.textContent = `Wrap-up: ${left} s`;
    };
    tick();
    wrapUp.timer = setInterval(tick, 1000);
    state.wrapUp = wrapUp;
  }

  function stopWrapUp() {
    if (state.wrapUp) {
      clearInterval(state.wrapUp.timer);
      state.wrapUp = null;
    }
  }

  /** Says in the live region what the presence means for the agent. */
  function describePresence() {
    if (state.call || state.negotiating) {
      return; // the call, or the negotiation, says what is going on
    }
    if (state.presence === "available") {
      setStatus("Available: waiting for calls.");
    } else if (state.presence === "wrap_up") {
      const left = state.wrapUp ? Math.ceil((state.wrapUp.until - Date.now()) / 1000) : null;
      setStatus(left ? `Wrap-up: you will be rung again in ${left} s.` : "Wrap-up: you will be rung again soon.");
    } else if (state.presence === "busy" && state.otherTabCall) {
      setStatus("In a call in another tab.");
    } else if (state.presence === "away") {
      if (!state.wantsAvailable) {
        setStatus("Away: you will not be rung.");
      } else if (state.legState !== "connected") {
        setStatus("Away: your audio is not connected.");
      } // else the leg has just connected: "available" follows at once
    }
  }

  function render() {
    const online = state.connected;
    ui.goAvailable.disabled = !online || state.negotiating || (state.wantsAvailable && legUsable());
    ui.goAway.disabled = !online || !state.wantsAvailable;
    ui.incoming.hidden = state.rings.size === 0;
    // A call is connected to the accepting tab's own leg: this tab can take one once its leg is up
    // (another tab may have made the agent available before this one's leg connected).
    const legReady = state.legState === "connected";
    for (const ring of state.rings.values()) {
      ring.accept.disabled = ring.answering || !legReady;
      ring.decline.disabled = ring.answering;
      ring.note.hidden = legReady;
      ring.note.textContent = state.negotiating
        ? "Your audio is connecting in this tab…"
        : "Your audio is not connected in this tab: Go available to take calls here.";
    }
  }

  function showOtherTab(callId) {
    state.otherTabCall = callId;
    ui.otherTab.hidden = !callId;
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
      showLogin(apiError(result, "Login failed."));
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
    state.autoAvailable = false;
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
    if (RECONNECT_ON.has(code)) {
      // Going available again afterwards, if that is what the agent had chosen.
      state.resumeAvailable = state.resumeAvailable || state.wantsAvailable;
      ui.disconnectedText.textContent = "Lost the connection to the call server. Reconnecting…";
      ui.disconnected.hidden = false;
      const delay = state.reconnectDelay * (0.5 + Math.random());
      state.reconnectDelay = Math.min(state.reconnectDelay * 2, RECONNECT_MAX_MS);
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = setTimeout(reconnect, delay);
      return;
    }
    ui.disconnectedText.textContent =
      code === CLOSE_REPLACED
        ? "Disconnected: the console was opened in another tab or window."
        : "Disconnected from the call server.";
    ui.disconnected.hidden = false;
  }

  async function reconnect() {
    clearTimeout(state.reconnectTimer);
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
      if (state.resumeAvailable) {
        closed(1006); // still reconnecting by itself, waiting longer each time
      }
    } finally {
      ui.reconnect.disabled = false;
    }
  }

  function handle(message) {
    switch (message.type) {
      case "hello":
        hello(message);
        break;
      case "presence":
        presenceChanged(message);
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
      case "call_details":
        if (message.visitor && typeof message.visitor === "object") {
          callDetails(text(message.call_id, 64), message.visitor);
        }
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
      case "callback":
        if (message.callback && typeof message.callback === "object") {
          callbackChanged(message.callback, true);
        }
        break;
      case "clip":
        if (message.clip && typeof message.clip === "object") {
          clipArrived(message.clip);
        }
        break;
      case "error":
        serverError(message);
        break;
      default:
        break;
    }
  }

  function hello(message) {
    state.connected = true;
    state.iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
    const agent = message.agent && typeof message.agent === "object" ? message.agent : {};
    ui.agentName.textContent = text(agent.name, 200);
    state.wantsAvailable = agent.wants_available === true;
    state.reconnectDelay = RECONNECT_FIRST_MS;
    const resuming = state.resumeAvailable && !state.wantsAvailable;
    state.resumeAvailable = false;
    setPresence(agent.presence, agent.wrap_up_seconds);
    showOtherTab(text(agent.in_call, 64) || null);
    if (resuming) {
      // Back after a lost connection, on a server that had not seen this agent: available again.
      setStatus("Reconnected. Going available again…");
      goAvailable(false);
    } else if (state.wantsAvailable) {
      // Presence survives a reload (and is shared with other tabs): this tab needs its own leg.
      setStatus("Connected. Going available again…");
      availableByItself();
    } else {
      setStatus("Connected. Go available to take calls.");
    }
    render();
    loadCallbacks();
    loadHistory();
  }

  function presenceChanged(message) {
    if (typeof message.wants_available === "boolean") {
      state.wantsAvailable = message.wants_available;
    }
    setPresence(message.status, message.wrap_up_seconds);
    if (state.presence !== "busy" && state.otherTabCall && !state.call) {
      showOtherTab(null);
    }
    describePresence();
    // Another tab went available: this one takes calls too once its own leg is up.
    if (state.wantsAvailable && !legUsable()) {
      availableByItself();
    }
  }

  function serverError(message) {
    const body = text(message.message, 300) || "The server refused a message.";
    showError(`Error: ${body}`);
    // An unusable SDP is reported without a ref: while an offer is pending it can only be that one.
    if (state.pendingAnswer && (message.ref === "offer" || message.code === "invalid_sdp")) {
      state.pendingAnswer.reject(new Error(body));
    }
    if (message.ref === "accept" && state.call && state.call.id === state.lastAccept) {
      // Two tabs accepted at once: both heard "answered" (it goes to every tab), and this one's
      // accept came second. The call is the other tab's.
      callTakenElsewhere(state.call.id);
      showError("");
    }
    if (message.ref === "accept" || message.ref === "decline") {
      for (const ring of state.rings.values()) {
        ring.answering = false;
      }
      render();
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

  /**
   * Negotiate this tab's leg because the agent already chose available (before a reload, or in
   * another tab); once per socket, so that a failing microphone is not retried in a loop. The
   * server derives "available" from that choice and the connected leg: no presence is sent, so a
   * "Go away" clicked meanwhile holds.
   */
  function availableByItself() {
    if (state.autoAvailable || state.negotiating || !state.connected) {
      return;
    }
    state.autoAvailable = true;
    goAvailable(true);
  }

  async function goAvailable(byItself) {
    if (state.negotiating || !state.connected) {
      return;
    }
    showError("");
    if (legUsable()) {
      if (!byItself) {
        send({ type: "presence", status: "available" });
      }
      return;
    }
    state.negotiating = true;
    // A socket that closes meanwhile ends this negotiation (teardown starts a new generation):
    // the next socket negotiates its own leg.
    const generation = state.generation;
    const stale = () => state.generation !== generation;
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
      if (stale()) {
        return;
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
      if (stale()) {
        pc.close();
        return;
      }
      setStatus("Connecting your audio…");
      const answer = await exchangeOffer(pc.localDescription.sdp);
      if (pc !== state.pc) {
        return;
      }
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      if (!byItself) {
        send({ type: "presence", status: "available" });
      }
      if (state.legState !== "connected") {
        return; // "Connecting your audio…" until the server says the leg is up
      }
    } catch (error) {
      if (stale()) {
        return;
      }
      closeLeg();
      setStatus("");
      showError(`Could not go available: ${error && error.message ? error.message : error}`);
    } finally {
      if (!stale()) {
        state.negotiating = false;
        render();
      }
    }
    if (!stale()) {
      describePresence();
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
      render();
      describePresence();
      return;
    }
    render();
  }

  function teardown() {
    state.generation += 1;
    state.negotiating = false;
    if (state.pendingAnswer) {
      state.pendingAnswer.reject(new Error("disconnected"));
    }
    for (const callId of [...state.rings.keys()]) {
      removeRing(callId);
    }
    stopCallTimer();
    state.call = null;
    state.muted = false;
    state.accepted.clear();
    ui.call.hidden = true;
    showOtherTab(null);
    if (state.details) {
      ui.detailsTitle.textContent = "Last call";
    }
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
    const visitor = message.visitor && typeof message.visitor === "object" ? message.visitor : {};
    const pageUrl = text(visitor.page_url, 2048);
    const direction = message.direction === "outbound" ? "outbound" : "inbound";
    const kind = direction === "outbound" ? "Call back (outbound)" : "Incoming call";
    const caller = text(visitor.name, 200) || text(visitor.email, 320) || text(visitor.phone, 32);
    const element = ui.ringTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.callId = callId;
    element.dataset.direction = direction;
    element.querySelector(".ring-kind").textContent = kind;
    element.querySelector(".ring-button").textContent = buttonName;
    fillList(element.querySelector(".ring-visitor"), visitorPairs(visitor, "inbound"));
    element.querySelector(".ring-url").textContent = pageUrl || "(unknown page)";
    element.querySelector(".ring-page").hidden = !pageUrl && direction === "outbound";
    const accept = element.querySelector(".accept");
    const decline = element.querySelector(".decline");
    const from = caller ? `${caller} (${buttonName})` : buttonName;
    accept.setAttribute("aria-label", `Accept call from ${from}`);
    decline.setAttribute("aria-label", `Decline call from ${from}`);
    const ring = {
      element,
      accept,
      decline,
      note: element.querySelector(".ring-note"),
      answering: false,
      buttonName,
      pageUrl,
      visitor,
      direction,
    };
    accept.addEventListener("click", () => {
      ring.answering = true;
      render();
      state.accepted.add(callId);
      state.lastAccept = callId;
      send({ type: "accept", call_id: callId });
    });
    decline.addEventListener("click", () => {
      ring.answering = true;
      render();
      send({ type: "decline", call_id: callId });
    });
    state.rings.set(callId, ring);
    ui.rings.append(element);
    showNotice("");
    render();
    ringer.start();
    // Announced, not focused: a keystroke meant for something else must not accept a call.
    if (!state.call) {
      announceRing(callId, ring, kind, caller);
    }
  }

  function announceRing(callId, ring, kind, caller) {
    const history = earlierCalls(ring.visitor.earlier_calls);
    setStatus(`${kind}: ${caller ? `${caller}, ` : ""}${ring.buttonName}.${history ? ` ${history}.` : ""}`);
    state.announced = { callId, kind, caller };
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
    state.accepted.delete(callId);
    if (!ring) {
      return;
    }
    if (reason === "answered_elsewhere") {
      showNotice("Answered by another agent.", true);
    } else if (reason === "ended") {
      showNotice("Missed call: the caller hung up or nobody answered in time.", true);
    } else if (reason === "timeout") {
      showNotice("Missed call: not answered in time, so it was passed on.", true);
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
    if (!state.accepted.has(callId)) {
      // Every tab hears the answer; this one did not accept, so the call is in another tab.
      callTakenElsewhere(callId);
      return;
    }
    state.accepted.delete(callId);
    state.call = { id: callId, started: Date.now(), timer: null };
    state.muted = false;
    showOtherTab(null);
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
    showDetails(callId, ring);
    showNotice("");
    showError("");
    setStatus("In call.");
    updateMicrophone();
    ui.hangup.focus();
  }

  function callTakenElsewhere(callId) {
    if (state.call && state.call.id === callId) {
      stopCallTimer();
      state.call = null;
      ui.call.hidden = true;
      delete ui.call.dataset.callId;
      updateMicrophone();
      if (state.details && state.details.callId === callId) {
        hideDetails();
      }
    }
    showOtherTab(callId);
    setStatus("A call was answered in another tab.");
  }

  function callEnded(callId, reason, detail) {
    removeRing(callId);
    state.accepted.delete(callId);
    scheduleHistory();
    if (state.otherTabCall === callId) {
      showOtherTab(null);
    }
    if (!state.call || state.call.id !== callId) {
      return;
    }
    const hadFocus = ui.call.contains(document.activeElement) || document.activeElement === document.body;
    stopCallTimer();
    state.call = null;
    state.muted = false;
    ui.call.hidden = true;
    delete ui.call.dataset.callId;
    ui.detailsTitle.textContent = "Last call";
    updateMicrophone();
    let why = END_REASONS[reason] || reason || "ended";
    if (reason === "failed" && detail) {
      why = `${why}: ${detail.replaceAll("_", " ")}`;
    }
    showNotice(`Call ended (${why}).`);
    setStatus("");
    describePresence();
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

  // --- caller details and notes -----------------------------------------------------------------

  function showDetails(callId, ring) {
    state.details = { callId, ring };
    ui.details.dataset.callId = callId;
    ui.detailsTitle.textContent = "Caller";
    fillCaller(ring);
    ui.notes.value = "";
    ui.notesStatus.textContent = "";
    showAlert(ui.notesError, "");
    ui.notesSave.disabled = false;
    showCallClips(callId);
    ui.details.hidden = false;
  }

  function fillCaller(ring) {
    fillList(ui.callVisitor, [
      ...visitorPairs(ring ? ring.visitor : {}, ring ? ring.direction : "inbound"),
      ["Button", ring ? ring.buttonName : "", "button"],
      ["Page", ring ? ring.pageUrl : "", "page"],
    ]);
  }

  /** What the server learnt of a caller after the ring (their earlier calls): on the ring and the call's details. */
  function callDetails(callId, update) {
    const known = { earlier_calls: update.earlier_calls };
    const ring = state.rings.get(callId);
    if (ring) {
      ring.visitor = { ...ring.visitor, ...known };
      fillList(ring.element.querySelector(".ring-visitor"), visitorPairs(ring.visitor, "inbound"));
      const announced = state.announced;
      if (!state.call && announced && announced.callId === callId) {
        announceRing(callId, ring, announced.kind, announced.caller); // the same, with the history
      }
    }
    const details = state.details;
    if (details && details.callId === callId && details.ring) {
      details.ring.visitor = { ...details.ring.visitor, ...known };
      fillCaller(details.ring);
    }
  }

  function hideDetails() {
    state.details = null;
    showCallClips(null);
    ui.details.hidden = true;
    delete ui.details.dataset.callId;
    ui.notes.value = "";
    ui.notesStatus.textContent = "";
    showAlert(ui.notesError, "");
  }

  async function saveNotes(event) {
    event.preventDefault();
    if (!state.details) {
      return;
    }
    const callId = state.details.callId;
    ui.notesSave.disabled = true;
    ui.notesStatus.textContent = "";
    showAlert(ui.notesError, "");
    let result = null;
    try {
      result = await api("PUT", `/api/v1/calls/${encodeURIComponent(callId)}/notes`, { notes: ui.notes.value });
    } catch {
      result = null;
    } finally {
      ui.notesSave.disabled = false;
    }
    if (!state.details || state.details.callId !== callId) {
      return; // the next call started meanwhile
    }
    if (result && result.response.ok) {
      ui.notesStatus.textContent = "Saved";
      loadHistory();
    } else {
      showAlert(ui.notesError, result ? apiError(result, "The notes could not be saved.") : "Could not reach the server.");
    }
  }

  // --- own call history -------------------------------------------------------------------------

  function scheduleHistory() {
    for (const timer of state.historyTimers) {
      clearTimeout(timer);
    }
    state.historyTimers = HISTORY_REFRESH_MS.map((ms) => setTimeout(loadHistory, ms));
  }

  async function loadHistory() {
    let result;
    try {
      result = await api("GET", "/api/v1/me/calls");
    } catch {
      showAlert(ui.historyError, "Your calls could not be loaded: the server cannot be reached.");
      return;
    }
    if (!result.response.ok || !result.data || !Array.isArray(result.data.calls)) {
      showAlert(ui.historyError, `Your calls could not be loaded. ${apiError(result, "")}`.trim());
      return;
    }
    showAlert(ui.historyError, "");
    renderHistory(result.data.calls);
  }

  function renderHistory(calls) {
    const bodies = [];
    for (const call of calls) {
      if (call && typeof call === "object") {
        bodies.push(historyEntry(call));
      }
    }
    for (const old of ui.historyTable.querySelectorAll("tbody")) {
      old.remove();
    }
    ui.historyTable.append(...bodies);
    ui.historyTable.hidden = bodies.length === 0;
    ui.historyEmpty.hidden = bodies.length > 0;
  }

  /** A call of the history: a row, and its notes in a row of their own (they need the width). */
  function historyEntry(call) {
    const visitor = call.visitor && typeof call.visitor === "object" ? call.visitor : {};
    const body = document.createElement("tbody");
    body.dataset.callId = text(call.id, 64);
    const time = document.createElement("time");
    time.dateTime = text(call.created_at, 64);
    time.textContent = formatTime(call.created_at);
    const caller = [text(visitor.name, 200), text(visitor.email, 320), text(visitor.phone, 32)].filter(Boolean);
    const rating = count(call.rating);
    const cells = {
      time,
      direction: call.direction === "outbound" ? "Outbound" : "Inbound",
      caller: caller.join(" · "),
      outcome: OUTCOMES[call.outcome] || (call.state === "ended" ? text(call.outcome, 40) : "In progress"),
      talk: typeof call.talk_ms === "number" ? formatDuration(call.talk_ms) : "",
      rating: rating ? `${rating}/5${call.rating_comment ? `: ${text(call.rating_comment, 2000)}` : ""}` : "",
    };
    const row = document.createElement("tr");
    for (const [name, value] of Object.entries(cells)) {
      const cell = document.createElement("td");
      cell.className = `history-${name}`;
      if (typeof value === "string") {
        cell.textContent = value || "—";
      } else {
        cell.append(value);
      }
      row.append(cell);
    }
    body.append(row);
    const notes = text(call.notes, 10000);
    if (notes) {
      const notesRow = document.createElement("tr");
      notesRow.className = "history-notes-row";
      const cell = document.createElement("td");
      cell.colSpan = row.childElementCount;
      const label = document.createElement("span");
      label.className = "history-notes-label";
      label.textContent = "Notes: ";
      const value = document.createElement("span");
      value.className = "history-notes";
      value.textContent = notes;
      cell.append(label, value);
      notesRow.append(cell);
      body.append(notesRow);
    }
    return body;
  }

  // --- callback requests ------------------------------------------------------------------------

  async function loadCallbacks() {
    let result;
    try {
      result = await api("GET", "/api/v1/callbacks?state=open");
    } catch {
      showAlert(ui.callbacksError, "Callback requests could not be loaded: the server cannot be reached.");
      return;
    }
    if (!result.response.ok || !result.data || !Array.isArray(result.data.callbacks)) {
      showAlert(ui.callbacksError, `Callback requests could not be loaded. ${apiError(result, "")}`.trim());
      return;
    }
    showAlert(ui.callbacksError, "");
    const listed = result.data.callbacks.filter((c) => c && typeof c === "object" && typeof c.id === "string");
    const ids = new Set(listed.map((c) => c.id));
    for (const id of [...state.callbacks.keys()]) {
      if (!ids.has(id)) {
        removeCallback(id);
      }
    }
    // Oldest first, each put on top: the newest ends up first.
    listed.sort((a, b) => text(a.created_at, 64).localeCompare(text(b.created_at, 64)));
    for (const callback of listed) {
      if (!state.doneCallbacks.has(callback.id)) {
        callbackChanged(callback);
      }
    }
  }

  /** A callback request was left, changed or done (from the list, or the socket's ``callback``). */
  function callbackChanged(callback, live) {
    const id = text(callback.id, 64);
    if (!id) {
      return;
    }
    if (callback.state !== "open") {
      state.doneCallbacks.add(id);
      removeCallback(id);
      return;
    }
    let entry = state.callbacks.get(id);
    const isNew = !entry;
    if (isNew) {
      entry = { data: callback, element: newCallbackElement(id) };
      state.callbacks.set(id, entry);
      ui.callbackList.prepend(entry.element);
    }
    entry.data = callback;
    fillCallback(entry.element, callback);
    if (isNew) {
      showCallbackClips(id);
    }
    renderCallbacks();
    if (isNew && live) {
      ui.callbacksStatus.textContent = `New callback request from ${callbackWho(callback)}.`;
    }
  }

  function callbackWho(callback) {
    return text(callback.name, 200) || text(callback.phone, 32) || text(callback.email, 320) || "a visitor";
  }

  function newCallbackElement(id) {
    const element = ui.callbackTemplate.content.firstElementChild.cloneNode(true);
    element.dataset.callbackId = id;
    const link = element.querySelector(".callback-link");
    const done = element.querySelector(".callback-done");
    link.addEventListener("click", () => {
      const entry = state.callbacks.get(id);
      createLink(id, entry ? callbackWho(entry.data) : "", link);
    });
    done.addEventListener("click", () => markDone(id, done));
    return element;
  }

  function fillCallback(element, callback) {
    const who = callbackWho(callback);
    element.querySelector(".callback-name").textContent = text(callback.name, 200) || "No name given";
    element.querySelector(".callback-reason").textContent =
      CALLBACK_REASONS[callback.reason] || text(callback.reason, 40);
    fillList(element.querySelector(".callback-details"), [
      ["Phone", text(callback.phone, 32), "phone"],
      ["Email", text(callback.email, 320), "email"],
      ["Note", text(callback.note, 2000), "note"],
      ["Requested", formatTime(callback.created_at), "created"],
    ]);
    element.querySelector(".callback-link").setAttribute("aria-label", `Create call link for ${who}`);
    element.querySelector(".callback-done").setAttribute("aria-label", `Mark done: ${who}`);
  }

  function removeCallback(id) {
    const entry = state.callbacks.get(id);
    if (!entry) {
      return;
    }
    // Keep the keyboard where it was: on the next request, or the list's heading area.
    const hadFocus = entry.element.contains(document.activeElement);
    const next = entry.element.nextElementSibling || entry.element.previousElementSibling;
    entry.element.remove();
    state.callbacks.delete(id);
    renderCallbacks();
    if (hadFocus) {
      const target = next && next.querySelector("button");
      (target || ui.newLink).focus();
    }
  }

  function renderCallbacks() {
    ui.callbacksEmpty.hidden = state.callbacks.size > 0;
  }

  async function markDone(id, button) {
    // Asked now: the socket's "callback" message may remove the request before the answer comes.
    const who = state.callbacks.has(id) ? callbackWho(state.callbacks.get(id).data) : "";
    button.disabled = true;
    showAlert(ui.callbacksError, "");
    let result = null;
    try {
      result = await api("POST", `/api/v1/callbacks/${encodeURIComponent(id)}/done`, {});
    } catch {
      result = null;
    }
    button.disabled = false;
    if (result && result.response.ok && result.data && result.data.callback) {
      callbackChanged(result.data.callback);
      ui.callbacksStatus.textContent = who ? `Marked done: ${who}.` : "Marked done.";
    } else {
      showAlert(
        ui.callbacksError,
        result ? apiError(result, "The request could not be marked done.") : "Could not reach the server.",
      );
    }
  }

  // --- clips: photos, videos and documents callers send -----------------------------------------
  //
  // A caller's clip arrives over the socket as a "clip" message once the server checked and stored
  // it: with the call this agent is in, or (any agent) with a callback request. Its content comes
  // from the same origin with this session's cookie; images and videos are shown in the page,
  // documents are links to save them.

  const CLIP_KINDS = { image: "Photo", video: "Video", document: "Document" };
  const CLIP_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "video/webm": "WebM",
    "video/mp4": "MP4",
    "application/pdf": "PDF",
  };

  function formatBytes(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) {
      return "";
    }
    if (bytes >= 1024 * 1024) {
      return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
    }
    return `${Math.max(1, Math.round(bytes / 1024))} kB`;
  }

  /** The clip's content address, if it is one of this server's (never anything else). */
  function clipContentUrl(clip) {
    const url = text(clip.content_url, 300);
    return /^\/api\/v1\/clips\/[0-9a-f-]{36}\/content$/.test(url) ? url : "";
  }

  function clipArrived(clip) {
    const id = text(clip.id, 64);
    const callId = text(clip.call_id, 64);
    const callbackId = text(clip.callback_id, 64);
    if (!id || !clipContentUrl(clip) || (!callId && !callbackId)) {
      return;
    }
    const store = callId ? state.callClips : state.callbackClips;
    const owner = callId || callbackId;
    if (!store.has(owner)) {
      store.set(owner, new Map());
    }
    store.get(owner).set(id, clip);
    const kind = (CLIP_KINDS[clip.kind] || "File").toLowerCase();
    const name = text(clip.name, 200);
    if (callId) {
      if (state.details && state.details.callId === callId) {
        addClip(ui.callClipList, clip);
        ui.callClips.hidden = false;
        ui.clipsStatus.textContent = `The caller sent a ${kind}${name ? `: ${name}` : ""}.`;
      }
    } else if (state.callbacks.has(callbackId)) {
      showCallbackClips(callbackId);
      const who = callbackWho(state.callbacks.get(callbackId).data);
      ui.callbacksStatus.textContent = `${who} sent a ${kind} with their callback request.`;
    }
  }

  /** The clips of ``callId`` in the caller panel (none: the panel's list is emptied). */
  function showCallClips(callId) {
    ui.callClipList.replaceChildren();
    ui.clipsStatus.textContent = "";
    const clips = callId ? state.callClips.get(callId) : null;
    for (const clip of clips ? clips.values() : []) {
      addClip(ui.callClipList, clip);
    }
    ui.callClips.hidden = ui.callClipList.childElementCount === 0;
  }

  function showCallbackClips(callbackId) {
    const entry = state.callbacks.get(callbackId);
    const clips = state.callbackClips.get(callbackId);
    if (!entry || !clips) {
      return;
    }
    const box = entry.element.querySelector(".callback-clips");
    const list = box.querySelector(".clip-list");
    for (const clip of clips.values()) {
      addClip(list, clip);
    }
    box.hidden = list.childElementCount === 0;
  }

  /** Adds ``clip`` to ``list`` (once): an image, a video player, or a link to the document. */
  function addClip(list, clip) {
    const id = text(clip.id, 64);
    if ([...list.children].some((item) => item.dataset.clipId === id)) {
      return;
    }
    const url = clipContentUrl(clip);
    const kind = CLIP_KINDS[clip.kind] || "File";
    const name = text(clip.name, 200) || `${kind.toLowerCase()} ${id.slice(0, 8)}`;
    const format = CLIP_FORMATS[clip.media_type] || text(clip.media_type, 60);
    const item = document.createElement("li");
    item.className = "clip";
    item.dataset.clipId = id;
    item.dataset.kind = text(clip.kind, 20);
    const title = document.createElement("p");
    title.className = "clip-title";
    const strong = document.createElement("strong");
    strong.textContent = kind;
    const about = [name, format, formatBytes(clip.byte_size)].filter(Boolean).join(" · ");
    const time = document.createElement("time");
    time.dateTime = text(clip.ready_at, 64);
    const at = new Date(time.dateTime);
    time.textContent = Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString([], { timeStyle: "short" });
    title.append(strong, ` ${about} `, time);
    item.append(title);
    const problem = document.createElement("p");
    problem.className = "error clip-error";
    problem.hidden = true;
    const failed = () => {
      problem.textContent = `This ${kind.toLowerCase()} cannot be shown (it may have been deleted).`;
      problem.hidden = false;
    };
    if (clip.kind === "image") {
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      link.className = "clip-view";
      const image = document.createElement("img");
      image.src = url;
      image.alt = `Photo from the caller: ${name}`;
      image.decoding = "async";
      image.addEventListener("error", failed);
      link.append(image);
      item.append(link);
    } else if (clip.kind === "video") {
      const video = document.createElement("video");
      video.controls = true;
      video.preload = "metadata";
      video.src = url;
      video.setAttribute("aria-label", `Video from the caller: ${name}`);
      video.addEventListener("error", failed);
      item.append(video);
    }
    const download = document.createElement("a");
    download.href = `${url}?download=1`;
    download.className = "clip-download";
    download.setAttribute("download", "");
    download.textContent = clip.kind === "document" ? `Download ${name}` : "Download";
    download.setAttribute("aria-label", `Download the ${kind.toLowerCase()} ${name}${format ? ` (${format})` : ""}`);
    item.append(download, problem);
    list.append(item);
  }

  // --- call links -------------------------------------------------------------------------------

  async function createLink(callbackId, who, button) {
    button.disabled = true;
    showAlert(ui.linkError, "");
    ui.linkStatus.textContent = "";
    let result = null;
    try {
      result = await api("POST", "/api/v1/call-links", callbackId ? { callback_id: callbackId } : {});
    } catch {
      result = null;
    }
    button.disabled = false;
    const link = result && result.response.ok && result.data && result.data.link;
    if (!link || typeof link.url !== "string") {
      showAlert(ui.linkError, result ? apiError(result, "The call link could not be created.") : "Could not reach the server.");
      return;
    }
    ui.linkFor.textContent = callbackId ? `Call link to call back ${who || "the visitor"}:` : "New call link:";
    ui.linkUrl.value = text(link.url, 2048);
    const expires = new Date(text(link.expires_at, 64));
    if (Number.isNaN(expires.getTime())) {
      ui.linkExpiry.textContent = "";
    } else {
      const minutes = Math.max(0, Math.round((expires.getTime() - Date.now()) / 60000));
      ui.linkExpiry.textContent = `Works once. Expires ${formatTime(link.expires_at)} (in ${minutes} min).`;
    }
    ui.linkResult.hidden = false;
    ui.linkStatus.textContent = "Call link created.";
    ui.linkUrl.focus();
    ui.linkUrl.select();
  }

  async function copyLink() {
    const url = ui.linkUrl.value;
    if (!url) {
      return;
    }
    try {
      await navigator.clipboard.writeText(url);
      ui.linkStatus.textContent = "Copied.";
    } catch {
      ui.linkUrl.focus();
      ui.linkUrl.select();
      ui.linkStatus.textContent = "The link is selected: press Ctrl+C (or ⌘C) to copy it.";
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  ui.loginForm.addEventListener("submit", logIn);
  ui.logout.addEventListener("click", logOut);
  ui.reconnect.addEventListener("click", reconnect);
  ui.goAvailable.addEventListener("click", () => goAvailable(false));
  ui.goAway.addEventListener("click", goAway);
  ui.mute.addEventListener("click", toggleMute);
  ui.hangup.addEventListener("click", hangUp);
  ui.notesForm.addEventListener("submit", saveNotes);
  ui.notes.addEventListener("input", () => {
    ui.notesStatus.textContent = "";
  });
  ui.newLink.addEventListener("click", () => createLink(null, "", ui.newLink));
  ui.linkCopy.addEventListener("click", copyLink);
  ui.historyRefresh.addEventListener("click", loadHistory);
  boot();
})();
