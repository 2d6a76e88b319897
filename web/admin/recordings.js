/*
 * Recordings: the organisation's latest recordings, each playable (the stereo rendering: visitor
 * left, agent right) and downloadable. Every playback and download is audited by the server.
 */

import { api, message } from "./api.js";
import { $, button, cell, duration, el, fail, show } from "./dom.js";

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

function recordingRow(recording) {
  const started = new Date(recording.started_at).toLocaleString();
  const controls = el("div", { className: "controls" });
  if (recording.state === "complete" || recording.state === "truncated") {
    const link = el("a", { href: recording.file_url, textContent: "Download" });
    link.setAttribute("aria-label", `Download the recording of ${started}`);
    controls.append(
      button("Play", "secondary play", `Play the call of ${started}`, () => play(recording, started)),
      link,
    );
  } else {
    controls.textContent = recording.state === "recording" ? "In progress" : "–";
  }
  const open = el("a", { href: `#calls/${recording.call_id}`, textContent: "Call" });
  open.setAttribute("aria-label", `Open the call of ${started}`);
  controls.append(open);
  return el(
    "tr",
    {},
    cell(started),
    cell(duration(recording.duration_ms)),
    cell(recording.state, `state-${recording.state}`),
    el("td", {}, controls),
  );
}

export default {
  async show() {
    const result = await api("/api/v1/recordings");
    if (!result.ok) {
      fail("error", message(result));
      return;
    }
    fail("error", "");
    $("rows").replaceChildren(...result.body.recordings.map(recordingRow));
    show("table", result.body.recordings.length > 0);
    show("empty", result.body.recordings.length === 0);
  },

  hide() {
    $("player").pause();
  },

  reset() {
    $("player").pause();
    $("player").removeAttribute("src");
    show("player-box", false);
  },
};
