/*
 * Admin console: recordings. Talks only to the REST API (/api/v1). Plain JS, no dependencies; every
 * text from the server is set with textContent.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: options.body ? { "Content-Type": "application/json" } : {},
      ...options,
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { status: response.status, ok: response.ok, body };
  }

  function duration(ms) {
    if (ms === null || ms === undefined) {
      return "–";
    }
    const seconds = Math.round(ms / 1000);
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    return td;
  }

  function play(recording, startedText) {
    const player = $("player");
    player.src = recording.audio_url;
    $("now-playing").textContent = `Playing the call of ${startedText} (visitor left, agent right).`;
    show("player-box", true);
    const playing = player.play();
    if (playing) {
      playing.catch(() => {});
    }
  }

  function row(recording) {
    const tr = document.createElement("tr");
    const started = new Date(recording.started_at).toLocaleString();
    tr.append(
      cell(started),
      cell(duration(recording.duration_ms)),
      cell(recording.state, `state-${recording.state}`),
    );
    const actions = document.createElement("td");
    const controls = document.createElement("div");
    controls.className = "controls";
    if (recording.state === "complete" || recording.state === "truncated") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary play";
      button.textContent = "Play";
      button.setAttribute("aria-label", `Play the call of ${started}`);
      button.addEventListener("click", () => play(recording, started));
      const link = document.createElement("a");
      link.href = recording.file_url;
      link.textContent = "Download";
      link.setAttribute("aria-label", `Download the recording of ${started}`);
      controls.append(button, link);
    } else {
      controls.textContent = recording.state === "recording" ? "In progress" : "–";
    }
    actions.append(controls);
    tr.append(actions);
    return tr;
  }

  async function loadRecordings() {
    const result = await api("/api/v1/recordings");
    if (!result.ok) {
      $("error").textContent = (result.body && result.body.message) || `Error ${result.status}`;
      show("error", true);
      return;
    }
    const rows = $("rows");
    rows.replaceChildren(...result.body.recordings.map(row));
    show("table", result.body.recordings.length > 0);
    show("empty", result.body.recordings.length === 0);
  }

  function loggedIn(user) {
    $("user-name").textContent = user.name;
    show("who", true);
    show("login", false);
    show("recordings", true);
    if (user.role !== "admin") {
      $("error").textContent = "This page is for admins. Agents answer calls in the agent console (/agent/).";
      show("error", true);
      return;
    }
    loadRecordings();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    show("login-error", false);
    const result = await api("/api/v1/session", {
      method: "POST",
      body: JSON.stringify({ email: $("email").value, password: $("password").value }),
    });
    if (!result.ok) {
      $("login-error").textContent = (result.body && result.body.message) || `Error ${result.status}`;
      show("login-error", true);
      return;
    }
    $("password").value = "";
    loggedIn(result.body.user);
  });

  $("logout").addEventListener("click", async () => {
    await api("/api/v1/session", { method: "DELETE" });
    $("player").removeAttribute("src");
    show("who", false);
    show("recordings", false);
    show("login", true);
  });

  (async () => {
    const me = await api("/api/v1/me");
    show("loading", false);
    if (me.ok) {
      loggedIn(me.body.user);
    } else {
      show("login", true);
    }
  })();
})();
