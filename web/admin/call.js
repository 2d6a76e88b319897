/*
 * One call's page (#calls/{id}): what happened and when (its start, each agent rung and how that
 * ring ended, the answer, the end and why), the visitor's form, page, notes and rating, and its
 * recordings, each playable, downloadable and deletable (after a confirmation). Playback loads
 * nothing until asked: each request for the audio is written to the audit log as a playback.
 * Below them, the clips the caller sent (photos shown, videos playable, documents to download);
 * each view of a clip is audited too.
 */

import { api, message } from "./api.js";
import { DIRECTIONS, outcomeText, visitorText } from "./calls.js";
import { $, button, dateTime, deleteButton, duration, el, fail, show } from "./dom.js";
import { buttonName, refresh, userName } from "./directory.js";

const END_REASONS = {
  visitor_hangup: "the visitor hung up",
  agent_hangup: "the agent hung up",
  no_answer: "nobody answered in time",
  abandoned: "the visitor left before an answer",
  rejected: "no agent could take it",
  failed: "it failed",
  shutdown: "the server shut down",
};
const RING_ENDS = {
  answered: "answered",
  declined: "declined",
  timeout: "not answered in time",
  answered_elsewhere: "answered by another agent",
  ended: "the call ended first",
  agent_offline: "the agent went offline",
};
const RECORDING_STATES = {
  complete: "Complete",
  truncated: "Cut short (the server stopped while recording); plays up to where it stopped",
  recording: "Being recorded",
  deleted: "Deleted",
};

/** The call shown, so that a late answer for another one is dropped. */
let showing = null;

function facts(pairs) {
  const list = el("dl", { className: "facts" });
  for (const [term, text] of pairs) {
    list.append(el("dt", { textContent: term }), el("dd", { textContent: text }));
  }
  return list;
}

function timeOfDay(iso) {
  return new Date(iso).toLocaleTimeString();
}

/** The call's history, oldest first: its own transitions, and each ring of an agent. */
function timeline(call, events, rings) {
  const items = [];
  for (const event of events) {
    if (event.kind === "created") {
      const who = call.direction === "outbound" ? "The customer called through a call link" : "The visitor called";
      items.push([event.at, who]);
    } else if (event.kind === "queued") {
      items.push([event.at, "Waiting for an agent"]);
    } else if (event.kind === "answered") {
      items.push([event.at, `Answered by ${event.agent_id ? userName(event.agent_id) : "an agent"}`]);
    } else if (event.kind === "ended") {
      items.push([event.at, `Ended: ${END_REASONS[event.reason] || event.reason || "ended"}`]);
    }
  }
  for (const ring of rings) {
    const end = ring.outcome
      ? `${RING_ENDS[ring.outcome] || ring.outcome} after ${duration(ring.ring_ms)}`
      : "still ringing";
    items.push([ring.rung_at, `Rang ${userName(ring.agent_id)}: ${end}`]);
  }
  const start = Date.parse(call.created_at);
  // Stable: at the same instant, the call's own events come before its rings.
  items.sort((a, b) => Date.parse(a[0]) - Date.parse(b[0]));
  return el(
    "ol",
    { className: "timeline" },
    ...items.map(([at, text]) =>
      el(
        "li",
        {},
        el("time", { dateTime: at, textContent: timeOfDay(at) }),
        el("span", { className: "muted offset", textContent: `+${duration(Math.max(0, Date.parse(at) - start))}` }),
        el("span", { className: "event", textContent: text }),
      ),
    ),
  );
}

function recordingItem(recording) {
  const started = dateTime(recording.started_at);
  const headingId = `rec-${recording.id}`;
  const heading = el("h4", { id: headingId, tabIndex: -1, textContent: `Recording of ${started}` });
  const state = el("dd", { textContent: RECORDING_STATES[recording.state] || recording.state });
  const details = el(
    "dl",
    { className: "facts" },
    el("dt", { textContent: "Length" }),
    el("dd", { textContent: duration(recording.duration_ms) }),
    el("dt", { textContent: "State" }),
    state,
  );
  const item = el("li", { className: "item recording" }, heading, details);
  item.dataset.recording = recording.id;
  item.setAttribute("aria-labelledby", headingId);
  if (recording.state !== "complete" && recording.state !== "truncated") {
    return item;
  }
  // preload=none: opening the page fetches no audio, so the audit log's playbacks are real ones.
  const audio = el("audio", { controls: true, preload: "none", src: recording.audio_url });
  audio.setAttribute("aria-label", `Recording of ${started}: visitor on the left, agent on the right`);
  const playButton = button("Play", "secondary small", `Play the recording of ${started}`, () => {
    const playing = audio.play();
    if (playing) {
      playing.catch(() => {});
    }
  });
  const download = el("a", { href: recording.file_url, className: "button-link", textContent: "Download" });
  download.setAttribute("download", "");
  download.setAttribute("aria-label", `Download the recording of ${started} (Ogg Opus, two channels)`);
  const hint = el("p", { className: "hint", textContent: "Visitor on the left, agent on the right." });
  const controls = el("div", { className: "controls" });
  controls.append(
    playButton,
    download,
    deleteButton(
      controls,
      `the recording of ${started}`,
      "Delete this recording for good? Nobody can play or download it again.",
      async () => {
        const result = await api(`/api/v1/recordings/${recording.id}`, { method: "DELETE" });
        if (!result.ok) {
          fail("call-error", message(result));
          return false;
        }
        audio.pause();
        audio.removeAttribute("src");
        for (const gone of [hint, audio, controls]) {
          gone.remove();
        }
        state.textContent = RECORDING_STATES.deleted;
        fail("call-error", "");
        $("call-status").textContent = `Deleted the recording of ${started}.`;
        heading.focus();
        return true;
      },
    ),
  );
  item.append(hint, audio, controls);
  return item;
}

const CLIP_KINDS = { image: "Photo", video: "Video", document: "Document" };
const CLIP_FORMATS = {
  "image/jpeg": "JPEG",
  "image/png": "PNG",
  "video/webm": "WebM",
  "video/mp4": "MP4",
  "application/pdf": "PDF",
};

function bytes(count) {
  if (typeof count !== "number" || count < 0) {
    return "";
  }
  return count >= 1024 * 1024 ? `${(count / (1024 * 1024)).toFixed(1)} MB` : `${Math.max(1, Math.round(count / 1024))} kB`;
}

/** The clips' place on the page (index.html has none: it is added after the recordings once). */
function clipsBox() {
  let box = $("call-clips");
  if (!box) {
    box = el("div", { id: "call-clips" });
    $("call-recordings").after(
      el("h3", { id: "call-clips-title", textContent: "Sent by the caller" }),
      el("p", { className: "muted", textContent: "Photos, videos and documents; every view and download is written to the audit log." }),
      box,
    );
  }
  return box;
}

function clipItem(clip) {
  const kind = CLIP_KINDS[clip.kind] || "File";
  const name = clip.name || `${kind.toLowerCase()} ${String(clip.id).slice(0, 8)}`;
  const format = CLIP_FORMATS[clip.media_type] || clip.media_type || "";
  const url = /^\/api\/v1\/clips\/[0-9a-f-]{36}\/content$/.test(clip.content_url || "") ? clip.content_url : "";
  const headingId = `clip-${clip.id}`;
  const item = el(
    "li",
    { className: "item clip" },
    el("h4", { id: headingId, textContent: `${kind}: ${name}` }),
    el(
      "p",
      { className: "hint" },
      [format, bytes(clip.byte_size), clip.ready_at ? `received ${dateTime(clip.ready_at)}` : ""].filter(Boolean).join(" · "),
    ),
  );
  item.dataset.clip = clip.id;
  item.dataset.kind = clip.kind || "";
  item.setAttribute("aria-labelledby", headingId);
  if (!url) {
    return item;
  }
  if (clip.kind === "image") {
    const image = el("img", { src: url, alt: `${kind} sent by the caller: ${name}`, loading: "lazy", decoding: "async" });
    item.append(el("a", { href: url, target: "_blank", rel: "noopener", className: "clip-view" }, image));
  } else if (clip.kind === "video") {
    // preload=none, as for recordings: opening the page fetches nothing, so the audit log's views are real ones.
    const video = el("video", { controls: true, preload: "none", src: url });
    video.setAttribute("aria-label", `${kind} sent by the caller: ${name}`);
    item.append(video);
  }
  const download = el("a", {
    href: `${url}?download=1`,
    className: "button-link",
    textContent: clip.kind === "document" ? `Download ${name}` : "Download",
  });
  download.setAttribute("download", "");
  download.setAttribute("aria-label", `Download the ${kind.toLowerCase()} ${name}${format ? ` (${format})` : ""}`);
  item.append(el("div", { className: "controls" }, download));
  return item;
}

function render(body) {
  const { call, rings, events, recordings } = body;
  const clips = Array.isArray(body.clips) ? body.clips.filter((c) => c && typeof c === "object" && c.id) : [];
  $("call-title").textContent = `Call of ${dateTime(call.created_at)}`;
  const visitor = visitorText(call.visitor);
  $("call-facts").replaceChildren(
    facts([
      ["Direction", DIRECTIONS[call.direction] || call.direction],
      ["Button", call.button_id ? buttonName(call.button_id) : "–"],
      ["Answered by", call.agent_id ? userName(call.agent_id) : "Nobody"],
      ["Outcome", outcomeText(call)],
      ["Waited", duration(call.wait_ms)],
      ["Talked", duration(call.talk_ms)],
      ["Page", call.page_url || "Not known"],
    ]),
  );
  $("call-visitor").replaceChildren(
    visitor.name === "Not given" && !visitor.contact
      ? el("p", { className: "muted", textContent: "The visitor gave no details." })
      : facts([
          ["Name", call.visitor.name || "Not given"],
          ["Email", call.visitor.email || "Not given"],
          ["Phone", call.visitor.phone || "Not given"],
        ]),
  );
  $("call-timeline").replaceChildren(timeline(call, events, rings));
  $("call-notes").textContent = call.notes || "No notes.";
  $("call-notes").classList.toggle("muted", !call.notes);
  const rating = call.rating ? [el("p", { textContent: `${call.rating} out of 5` })] : [];
  if (call.rating_comment) {
    rating.push(el("blockquote", { className: "comment", textContent: call.rating_comment }));
  }
  $("call-rating").replaceChildren(
    ...(rating.length ? rating : [el("p", { className: "muted", textContent: "The visitor did not rate the call." })]),
  );
  $("call-recordings").replaceChildren(
    ...(recordings.length
      ? [el("ul", { className: "items" }, ...recordings.map(recordingItem))]
      : [el("p", { className: "muted", textContent: "This call was not recorded." })]),
  );
  clipsBox().replaceChildren(
    ...(clips.length
      ? [el("ul", { className: "items clips" }, ...clips.map(clipItem))]
      : [
          el("p", {
            className: "muted",
            textContent: call.restricted
              ? "The caller restricted the processing of their data: what they sent is not shown."
              : "The caller sent no photos, videos or documents.",
          }),
        ]),
  );
  show("call-body", true);
}

export default {
  async show(id) {
    showing = id;
    show("call-body", false);
    fail("call-error", "");
    $("call-status").textContent = "";
    $("call-title").textContent = "Call";
    const failure = await refresh("users", "buttons");
    const result = failure ? null : await api(`/api/v1/calls/${encodeURIComponent(id)}`);
    if (showing !== id) {
      return;
    }
    if (failure || !result.ok) {
      fail("call-error", failure || message(result));
      return;
    }
    render(result.body);
  },

  hide() {
    for (const audio of $("call-recordings").querySelectorAll("audio")) {
      audio.pause();
    }
    for (const video of $("call-clips") ? $("call-clips").querySelectorAll("video") : []) {
      video.pause();
    }
  },

  reset() {
    showing = null;
    for (const audio of $("call-recordings").querySelectorAll("audio")) {
      audio.pause();
      audio.removeAttribute("src");
    }
    $("call-recordings").replaceChildren();
    if ($("call-clips")) {
      for (const video of $("call-clips").querySelectorAll("video")) {
        video.pause();
        video.removeAttribute("src");
      }
      $("call-clips").replaceChildren();
    }
    show("call-body", false);
  },
};
