/*
 * Call button widget (signalling protocol v1).
 *
 * Embed on any page:
 *   <script src="https://SERVER/widget.js" data-button="cb_KEY" async></script>
 *
 * The call-link page (/call/TOKEN on the server) uses it with data-link="TOKEN" instead, and
 * data-inline="ID" to render into the element with that id rather than as a floating button.
 *
 * It renders into a Shadow DOM attached to its own element (so the host page's CSS cannot reach
 * it), styled with a constructable stylesheet only: no inline <style>, no style attributes, so it
 * works under a host Content-Security-Policy that allows only this script and the server's origin
 * (script-src + connect-src). Everything it shows that comes from the server is set as text, never
 * as HTML. It defines no globals and loads nothing else.
 *
 * What a visitor goes through: the button; the pre-call form when the button asks for details;
 * the recording notice; the queue (position, ringback from the server); the call (timer, mute,
 * hang up); after it, a rating. When the button is closed, or nobody answered in time, a form to
 * ask for a callback instead.
 */
(() => {
  "use strict";

  const KEY_PATTERN = /^cb_[A-Za-z0-9_-]{16,64}$/;
  const LINK_PATTERN = /^cl_[A-Za-z0-9_-]{32}$/;
  const COLOUR_PATTERN = /^#[0-9a-fA-F]{6}$/;
  const EMAIL_PATTERN = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
  const PHONE_PATTERN = /^\+?[0-9 ().-]{3,30}$/;
  const ICE_GATHERING_TIMEOUT_MS = 3000;
  const HELLO_TIMEOUT_MS = 10000;
  const MAX_PAGE_URL = 2048;
  const FIELDS = ["name", "email", "phone"];
  const LIMITS = { name: 200, email: 320, phone: 32, note: 2000, comment: 2000 };

  const TEXT = {
    en: {
      call: (name) => `Call ${name}`,
      unavailableLabel: (name) => `Call ${name} (unavailable)`,
      nobodyLabel: (name) => `Call ${name} (no one is available right now)`,
      closedLabel: (name) => `Call ${name} (closed now)`,
      connecting: "Connecting…",
      ringing: "Ringing… Waiting for someone to answer.",
      queued: (n) => (n === 1 ? "You are next in line. Please hold on." : `You are number ${n} in line. Please hold on.`),
      inCall: "In call",
      noAgent: "No one is available to take your call right now.",
      declined: "Nobody could take your call. Please try again later.",
      noAnswer: "No one answered. Please try again later.",
      maxWait: "Sorry, nobody could answer in time.",
      closed: "We are closed right now.",
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
      linkUsed: "This call link was used already or has expired. Ask for a new one.",
      unavailable: (why) => `The call button is unavailable: ${why}.`,
      formIntro: "Before we call, tell us who you are.",
      name: "Your name",
      email: "Email",
      phone: "Phone",
      note: "What is it about? (optional)",
      optional: "(optional)",
      startCall: "Call now",
      cancel: "Cancel",
      required: (label) => `${label} is required.`,
      badEmail: "Enter a valid email address.",
      badPhone: "Enter a valid phone number.",
      callbackIntro: "Leave your details and we will call you back.",
      callbackNeedsContact: "Leave a phone number or an email address.",
      requestCallback: "Request a callback",
      callbackSent: "Thank you. We will call you back.",
      ratingLegend: "How was your call?",
      stars: (n) => (n === 1 ? "1 star" : `${n} stars`),
      comment: "Comment (optional)",
      sendRating: "Send rating",
      ratingNeeded: "Choose from 1 to 5 stars.",
      ratingSent: "Thank you for your feedback.",
      sendFailed: "That did not work. Please try again.",
      mute: "Mute",
      hangUp: "Hang up",
      callAgain: "Call again",
      close: "Close",
      duration: "Call duration",
      muted: "Microphone muted",
      unmuted: "Microphone on",
      recorded: "This call is recorded.",
    },
    fr: {
      call: (name) => `Appeler ${name}`,
      unavailableLabel: (name) => `Appeler ${name} (indisponible)`,
      nobodyLabel: (name) => `Appeler ${name} (personne n’est disponible pour le moment)`,
      closedLabel: (name) => `Appeler ${name} (fermé pour le moment)`,
      connecting: "Connexion…",
      ringing: "Ça sonne… Nous attendons que quelqu’un réponde.",
      queued: (n) =>
        n === 1 ? "Vous êtes le prochain. Merci de patienter." : `Vous êtes numéro ${n} dans la file. Merci de patienter.`,
      inCall: "En communication",
      noAgent: "Personne n’est disponible pour prendre votre appel pour le moment.",
      declined: "Personne n’a pu prendre votre appel. Réessayez plus tard.",
      noAnswer: "Personne n’a répondu. Réessayez plus tard.",
      maxWait: "Désolé, personne n’a pu répondre à temps.",
      closed: "Nous sommes fermés pour le moment.",
      agentHangup: "Le conseiller a mis fin à l’appel.",
      ended: "Appel terminé.",
      failed: "L’appel a échoué.",
      shutdown: "Le service redémarre. Rappelez dans un instant.",
      micDenied: "L’accès au micro a été refusé. Autorisez le micro pour appeler.",
      micMissing: "Aucun micro n’a été trouvé.",
      micFailed: "Le micro n’a pas pu être utilisé.",
      unsupported: "Ce navigateur ne peut pas appeler depuis cette page.",
      unreachable: "Le service d’appel est injoignable.",
      connectionLost: "La connexion au service d’appel a été perdue.",
      mediaLost: "L’appel a échoué. La connexion audio a été perdue.",
      linkUsed: "Ce lien d’appel a déjà servi ou a expiré. Demandez-en un nouveau.",
      unavailable: (why) => `Le bouton d’appel est indisponible : ${why}.`,
      formIntro: "Avant d’appeler, dites-nous qui vous êtes.",
      name: "Votre nom",
      email: "E-mail",
      phone: "Téléphone",
      note: "À quel sujet ? (facultatif)",
      optional: "(facultatif)",
      startCall: "Appeler",
      cancel: "Annuler",
      required: (label) => `${label} : ce champ est obligatoire.`,
      badEmail: "Saisissez une adresse e-mail valide.",
      badPhone: "Saisissez un numéro de téléphone valide.",
      callbackIntro: "Laissez vos coordonnées et nous vous rappellerons.",
      callbackNeedsContact: "Laissez un numéro de téléphone ou une adresse e-mail.",
      requestCallback: "Demander à être rappelé",
      callbackSent: "Merci. Nous vous rappellerons.",
      ratingLegend: "Comment s’est passé votre appel ?",
      stars: (n) => (n === 1 ? "1 étoile" : `${n} étoiles`),
      comment: "Commentaire (facultatif)",
      sendRating: "Envoyer la note",
      ratingNeeded: "Choisissez de 1 à 5 étoiles.",
      ratingSent: "Merci pour votre avis.",
      sendFailed: "Cela n’a pas fonctionné. Réessayez.",
      mute: "Couper le micro",
      hangUp: "Raccrocher",
      callAgain: "Rappeler",
      close: "Fermer",
      duration: "Durée de l’appel",
      muted: "Micro coupé",
      unmuted: "Micro activé",
      recorded: "Cet appel est enregistré.",
    },
  };

  const FAILURE_DETAILS = {
    en: {
      offer_refused: "Your browser's audio settings were refused.",
      visitor_media_failed: "The audio connection was lost.",
      agent_media_failed: "The agent's audio connection was lost.",
    },
    fr: {
      offer_refused: "Les réglages audio de votre navigateur ont été refusés.",
      visitor_media_failed: "La connexion audio a été perdue.",
      agent_media_failed: "La connexion audio du conseiller a été perdue.",
    },
  };

  // Calls that end this way are offered the callback form, with the reason the request records.
  const CALLBACK_REASONS = { max_wait: "max_wait", closed: "closed", no_agent_available: "no_agent" };

  const CSS = `
:host { all: initial !important; }
.cb {
  --accent: #1a7f4b;
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  display: flex; flex-direction: column; align-items: flex-end; gap: 12px;
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #17212b; text-align: left;
}
.cb.left { right: auto; left: 20px; align-items: flex-start; }
.cb.inline { position: static; align-items: flex-start; }
.cb *, .cb *::before, .cb *::after { box-sizing: border-box; }
.fab {
  width: 60px; height: 60px; border-radius: 50%; border: 0; padding: 0; margin: 0;
  display: grid; place-items: center; cursor: pointer;
  background: var(--accent); color: #fff;
  box-shadow: 0 4px 14px rgba(0, 0, 0, .25);
  transition: transform .15s ease, filter .15s ease;
}
.fab:hover { filter: brightness(.9); transform: scale(1.05); }
.fab.unavailable { background: #6b7580; }
.fab svg { width: 28px; height: 28px; fill: currentColor; }
button:focus-visible, input:focus-visible, textarea:focus-visible, label:focus-within {
  outline: 3px solid #1f6feb; outline-offset: 2px;
}
.panel {
  width: min(340px, calc(100vw - 40px)); max-height: calc(100vh - 120px); overflow: auto;
  padding: 16px; border-radius: 14px;
  background: #fff; border: 1px solid #d5dbe1;
  box-shadow: 0 8px 28px rgba(0, 0, 0, .2);
}
.inline .panel { box-shadow: none; }
.title { margin: 0 0 6px; font-weight: 600; font-size: 16px; }
.status { margin: 0; }
.recording { margin: 8px 0 0; font-size: 13px; color: #5b6773; }
.recording::before {
  content: ""; display: inline-block; width: 8px; height: 8px; margin-right: 6px;
  border-radius: 50%; background: #c62828; vertical-align: 1px;
}
.timer { margin: 6px 0 0; font-variant-numeric: tabular-nums; font-size: 22px; font-weight: 600; }
form { margin: 12px 0 0; display: flex; flex-direction: column; gap: 4px; }
form p.intro { margin: 0 0 6px; }
form label { font-size: 13px; font-weight: 600; margin-top: 6px; }
form label .opt { font-weight: 400; color: #5b6773; }
form input[type=text], form input[type=email], form input[type=tel], form textarea {
  font: inherit; padding: 7px 9px; border: 1px solid #9aa5b1; border-radius: 8px; width: 100%;
  background: #fff; color: #17212b;
}
form textarea { min-height: 60px; resize: vertical; }
form [aria-invalid="true"] { border-color: #c62828; }
.field-error, .form-error { margin: 2px 0 0; font-size: 13px; color: #b3261e; }
fieldset { border: 0; margin: 0; padding: 0; }
legend { font-weight: 600; padding: 0; margin-bottom: 6px; }
.stars { display: flex; gap: 4px; }
.stars label { margin: 0; cursor: pointer; display: inline-flex; align-items: center; }
.stars input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.stars span { font-size: 26px; line-height: 1; color: #b8c2cc; }
.stars label.on span { color: #e0a100; }
.done { margin: 10px 0 0; font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 14px; }
.controls button, form button {
  flex: 1 1 auto; min-height: 40px; padding: 8px 14px; border-radius: 20px; cursor: pointer;
  font: inherit; font-weight: 600; border: 1px solid #b8c2cc; background: #f4f6f8; color: #17212b;
}
form .actions { display: flex; gap: 8px; margin-top: 10px; }
.controls button:hover, form button:hover { filter: brightness(.95); }
form button.primary, .controls .again { background: var(--accent); border-color: var(--accent); color: #fff; }
.controls .hangup { background: #c62828; border-color: #c62828; color: #fff; }
.controls .mute[aria-pressed="true"] { background: #17212b; border-color: #17212b; color: #fff; }
.cb[data-phase="ringing"] .status::before {
  content: ""; display: inline-block; width: 9px; height: 9px; margin-right: 8px;
  border-radius: 50%; background: var(--accent); animation: cb-pulse 1s ease-in-out infinite;
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
    for (const tag of document.querySelectorAll("script[src]")) {
      if (/\/widget\.js(?:[?#]|$)/.test(tag.src) && (tag.hasAttribute("data-button") || tag.hasAttribute("data-link"))) {
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
  const linkToken = script.getAttribute("data-link");
  let key = script.getAttribute("data-button") || "";
  if (linkToken !== null ? !LINK_PATTERN.test(linkToken) : !KEY_PATTERN.test(key)) {
    console.warn("callbutton: the data-button attribute is not a call button key");
    return;
  }
  const serverOrigin = new URL(script.src, document.baseURI).origin;
  const socketUrl =
    serverOrigin.replace(/^http/, "ws") +
    "/ws/v1/visitor?" +
    (linkToken !== null ? "link=" + encodeURIComponent(linkToken) : "key=" + encodeURIComponent(key));
  const inlineTarget = script.getAttribute("data-inline");

  // --- language -----------------------------------------------------------------------------------

  let lang = "en";

  function t(name, ...args) {
    const value = (TEXT[lang] || TEXT.en)[name];
    return typeof value === "function" ? value(...args) : value;
  }

  // --- DOM ----------------------------------------------------------------------------------------

  let uid = 0;

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
  let sheet = null;
  if ("adoptedStyleSheets" in Document.prototype && typeof CSSStyleSheet === "function") {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    // Older browsers: a <style> element (blocked by a strict style-src, but nothing else works).
    shadow.append(el("style", {}, CSS));
  }

  /** A text input with its label and error line; ``input.value`` is what the visitor typed. */
  function field(name, type, label, optional) {
    const id = `cb-${name}-${++uid}`;
    const input =
      type === "textarea"
        ? el("textarea", { id, name, maxlength: String(LIMITS[name] || 2000) })
        : el("input", { id, name, type, maxlength: String(LIMITS[name] || 200) });
    if (type === "email") {
      input.setAttribute("autocomplete", "email");
    } else if (type === "tel") {
      input.setAttribute("autocomplete", "tel");
    } else if (name === "name") {
      input.setAttribute("autocomplete", "name");
    }
    const error = el("p", { class: "field-error", id: `${id}-error`, hidden: "" });
    input.setAttribute("aria-describedby", error.id);
    const labelNode = el("label", { for: id }, label);
    if (optional) {
      labelNode.append(" ", el("span", { class: "opt" }, t("optional")));
    }
    return { name, input, error, label: labelNode, nodes: [labelNode, input, error] };
  }

  function setFieldError(entry, message) {
    entry.error.textContent = message || "";
    entry.error.hidden = !message;
    if (message) {
      entry.input.setAttribute("aria-invalid", "true");
    } else {
      entry.input.removeAttribute("aria-invalid");
    }
  }

  const ui = {
    root: el("div", { class: "cb", "data-phase": "idle" }),
    panel: el("section", { class: "panel", hidden: "" }),
    title: el("p", { class: "title" }),
    status: el("p", { class: "status" }),
    recording: el("p", { class: "recording", hidden: "" }),
    timer: el("p", { class: "timer", role: "timer", hidden: "" }),
    precall: el("form", { class: "precall", hidden: "", novalidate: "" }),
    callback: el("form", { class: "callback", hidden: "", novalidate: "" }),
    rating: el("form", { class: "rating", hidden: "", novalidate: "" }),
    done: el("p", { class: "done", hidden: "", tabindex: "-1" }),
    mute: el("button", { type: "button", class: "mute", "aria-pressed": "false" }),
    hangup: el("button", { type: "button", class: "hangup" }),
    again: el("button", { type: "button", class: "again" }),
    close: el("button", { type: "button", class: "close" }),
    fab: el("button", { type: "button", class: "fab" }, phoneIcon()),
    live: el("div", { class: "sr", "aria-live": "polite", role: "status" }),
    audio: el("audio", { autoplay: "" }),
  };
  ui.panel.append(
    ui.title,
    ui.status,
    ui.recording,
    ui.timer,
    ui.precall,
    ui.callback,
    ui.rating,
    ui.done,
    el("div", { class: "controls" }, ui.mute, ui.hangup, ui.again, ui.close),
  );
  ui.root.append(ui.panel, ui.fab, ui.live, ui.audio);
  shadow.append(ui.root);

  // --- state --------------------------------------------------------------------------------------

  const button = {
    name: "Support",
    recordingNotice: null, // the button's notice when its calls are recorded
    form: {}, // field -> "optional" | "required"
    open: true,
    closedMessage: null,
  };
  let unavailableMessage = null; // set when the button cannot be used from this page
  let phase = "idle";
  let current = null; // the call in progress: { ws, pc, stream, callId, sent, over, timer }
  let ended = null; // the last call's end: { callId, ratingToken, callbackReason }
  let forms = null; // the form fields built for the button: { precall: [...], callback: [...], rating }

  function setLabels() {
    const label = t("call", button.name);
    ui.fab.setAttribute("aria-label", label);
    ui.fab.title = label;
    ui.panel.setAttribute("aria-label", label);
    ui.title.textContent = button.name;
    ui.timer.setAttribute("aria-label", t("duration"));
    ui.mute.textContent = t("mute");
    ui.hangup.textContent = t("hangUp");
    ui.again.textContent = t("callAgain");
    ui.close.textContent = t("close");
    host.setAttribute("lang", lang);
  }

  /**
   * Show a phase: idle (the button), form (the pre-call form), connecting, ringing (queued), in-call,
   * ended (with the rating or callback form when they apply), closed (the closed message and the
   * callback form).
   */
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
    ui.recording.hidden = !(active || phase === "form") || button.recordingNotice === null;
    ui.recording.textContent = button.recordingNotice || "";
    ui.precall.hidden = phase !== "form";
    const offerCallback = linkToken === null && (phase === "closed" || (phase === "ended" && ended && ended.callbackReason));
    ui.callback.hidden = !offerCallback;
    ui.rating.hidden = !(phase === "ended" && ended && ended.ratingToken);
    ui.done.hidden = true;
    ui.mute.hidden = phase !== "ringing" && phase !== "in-call";
    ui.hangup.hidden = !active;
    ui.again.hidden = phase !== "ended" || unavailableMessage !== null || linkToken !== null;
    ui.close.hidden = !(phase === "ended" || phase === "closed") || inlineTarget !== null;
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

  function learnButton(info) {
    if (!info || typeof info !== "object") {
      return;
    }
    if (typeof info.name === "string" && info.name && linkToken === null) {
      button.name = info.name.slice(0, 100);
    }
    const recording = info.recording;
    if (recording && typeof recording === "object") {
      button.recordingNotice =
        recording.enabled === true ? String(recording.notice || t("recorded")).slice(0, 500) : null;
    }
    if (info.language === "fr" || info.language === "en") {
      lang = info.language;
    }
    if (info.form_fields && typeof info.form_fields === "object") {
      button.form = {};
      for (const name of FIELDS) {
        const mode = info.form_fields[name];
        if (mode === "optional" || mode === "required") {
          button.form[name] = mode;
        }
      }
    }
    if (typeof info.colour === "string" && COLOUR_PATTERN.test(info.colour) && sheet) {
      sheet.insertRule(`.cb { --accent: ${info.colour}; }`, sheet.cssRules.length);
    }
    ui.root.classList.toggle("left", info.position === "bottom-left");
    buildForms();
    setLabels();
  }

  // --- forms --------------------------------------------------------------------------------------

  function buildForms() {
    const precall = [];
    ui.precall.replaceChildren(el("p", { class: "intro" }, t("formIntro")));
    for (const name of FIELDS) {
      if (button.form[name]) {
        const type = name === "email" ? "email" : name === "phone" ? "tel" : "text";
        const entry = field(name, type, t(name), button.form[name] === "optional");
        if (button.form[name] === "required") {
          entry.input.setAttribute("required", "");
          entry.input.setAttribute("aria-required", "true");
        }
        precall.push(entry);
        ui.precall.append(...entry.nodes);
      }
    }
    const precallError = el("p", { class: "form-error", role: "alert", hidden: "" });
    ui.precall.append(
      precallError,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "submit", class: "primary" }, t("startCall")),
        el("button", { type: "button", class: "cancel" }, t("cancel")),
      ),
    );
    ui.precall.querySelector(".cancel").addEventListener("click", () => {
      show("idle", "");
      ui.fab.focus();
    });

    const callback = [
      field("name", "text", t("name"), true),
      field("phone", "tel", t("phone"), true),
      field("email", "email", t("email"), true),
      field("note", "textarea", t("note"), false),
    ];
    const callbackError = el("p", { class: "form-error", role: "alert", hidden: "" });
    ui.callback.replaceChildren(el("p", { class: "intro" }, t("callbackIntro")));
    for (const entry of callback) {
      ui.callback.append(...entry.nodes);
    }
    ui.callback.append(
      callbackError,
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, t("requestCallback"))),
    );

    const starsName = `cb-stars-${++uid}`;
    const stars = el("div", { class: "stars" });
    const starLabels = [];
    for (let n = 1; n <= 5; n++) {
      const input = el("input", { type: "radio", name: starsName, value: String(n), "aria-label": t("stars", n) });
      const label = el("label", {}, input, el("span", { "aria-hidden": "true" }, "★"));
      starLabels.push(label);
      stars.append(label);
      input.addEventListener("change", () => {
        starLabels.forEach((l, i) => l.classList.toggle("on", i < n));
      });
    }
    const comment = field("comment", "textarea", t("comment"), false);
    const ratingError = el("p", { class: "form-error", role: "alert", hidden: "" });
    ui.rating.replaceChildren(
      el("fieldset", {}, el("legend", {}, t("ratingLegend")), stars),
      ...comment.nodes,
      ratingError,
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, t("sendRating"))),
    );
    forms = { precall, precallError, callback, callbackError, stars, comment, ratingError };
  }

  function showFormError(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  /** The pre-call answers, or null after marking what is wrong. */
  function precallAnswers() {
    const answers = {};
    let firstBad = null;
    for (const entry of forms.precall) {
      const value = entry.input.value.trim();
      let problem = null;
      if (!value && button.form[entry.name] === "required") {
        problem = t("required", t(entry.name));
      } else if (value && entry.name === "email" && !EMAIL_PATTERN.test(value)) {
        problem = t("badEmail");
      } else if (value && entry.name === "phone" && !PHONE_PATTERN.test(value)) {
        problem = t("badPhone");
      }
      setFieldError(entry, problem);
      if (problem && !firstBad) {
        firstBad = entry.input;
      }
      if (value) {
        answers[entry.name] = value;
      }
    }
    if (firstBad) {
      firstBad.focus();
      return null;
    }
    return answers;
  }

  function openForm(message) {
    show("form", "");
    showFormError(forms.precallError, message || null);
    const first = forms.precall.find((entry) => entry.input.getAttribute("aria-invalid") === "true") || forms.precall[0];
    if (first) {
      first.input.focus();
    }
  }

  ui.precall.addEventListener("submit", (event) => {
    event.preventDefault();
    const answers = precallAnswers();
    if (answers !== null) {
      startCall(answers);
    }
  });

  async function post(path, payload) {
    const response = await fetch(`${serverOrigin}${path}`, {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    if (response.ok) {
      return null;
    }
    try {
      const body = await response.json();
      return typeof body.message === "string" ? body.message.slice(0, 300) : t("sendFailed");
    } catch {
      return t("sendFailed");
    }
  }

  function thank(form, message) {
    form.hidden = true;
    ui.done.textContent = message;
    ui.done.hidden = false;
    ui.live.textContent = message;
    ui.done.focus();
  }

  ui.callback.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    let firstBad = null;
    for (const entry of forms.callback) {
      const value = entry.input.value.trim();
      let problem = null;
      if (value && entry.name === "email" && !EMAIL_PATTERN.test(value)) {
        problem = t("badEmail");
      } else if (value && entry.name === "phone" && !PHONE_PATTERN.test(value)) {
        problem = t("badPhone");
      }
      setFieldError(entry, problem);
      firstBad = firstBad || (problem ? entry.input : null);
      if (value) {
        values[entry.name] = value;
      }
    }
    if (!firstBad && !values.phone && !values.email) {
      showFormError(forms.callbackError, t("callbackNeedsContact"));
      forms.callback[1].input.focus();
      return;
    }
    if (firstBad) {
      firstBad.focus();
      return;
    }
    showFormError(forms.callbackError, null);
    const reason = phase === "closed" ? "closed" : (ended && ended.callbackReason) || "visitor";
    if (ended && ended.callId && phase === "ended") {
      values.call_id = ended.callId;
    }
    values.reason = reason;
    let problem;
    try {
      problem = await post(`/api/v1/widget/${encodeURIComponent(key)}/callbacks`, values);
    } catch {
      problem = t("unreachable");
    }
    if (problem) {
      showFormError(forms.callbackError, problem);
    } else {
      thank(ui.callback, t("callbackSent"));
    }
  });

  ui.rating.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = forms.stars.querySelector("input:checked");
    if (!chosen) {
      showFormError(forms.ratingError, t("ratingNeeded"));
      forms.stars.querySelector("input").focus();
      return;
    }
    showFormError(forms.ratingError, null);
    const payload = { call_id: ended.callId, token: ended.ratingToken, rating: Number(chosen.value) };
    const comment = forms.comment.input.value.trim();
    if (comment) {
      payload.comment = comment;
    }
    let problem;
    try {
      problem = await post(`/api/v1/widget/${encodeURIComponent(key)}/ratings`, payload);
    } catch {
      problem = t("unreachable");
    }
    if (problem) {
      showFormError(forms.ratingError, problem);
    } else {
      ended.ratingToken = null;
      thank(ui.rating, t("ratingSent"));
    }
  });

  // --- messages -----------------------------------------------------------------------------------

  function endMessage(reason, detail, message) {
    switch (reason) {
      case "rejected":
        if (detail === "closed") {
          return message ? String(message).slice(0, 500) : t("closed");
        }
        return detail === "no_agent_available" ? t("noAgent") : t("declined");
      case "no_answer":
        return detail === "max_wait" && linkToken === null ? t("maxWait") : t("noAnswer");
      case "agent_hangup":
        return t("agentHangup");
      case "failed": {
        if (!detail) {
          return t("failed");
        }
        const known = (FAILURE_DETAILS[lang] || FAILURE_DETAILS.en)[detail];
        return `${t("failed")} ${known || `(${String(detail).slice(0, 80)})`}`;
      }
      case "shutdown":
        return t("shutdown");
      default: // visitor_hangup, abandoned
        return t("ended");
    }
  }

  function micMessage(error) {
    const name = error && error.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return t("micDenied");
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return t("micMissing");
    }
    return t("micFailed");
  }

  function pageUrl() {
    if (!/^https?:$/.test(location.protocol) || linkToken !== null) {
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

  // --- the call -----------------------------------------------------------------------------------

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
  function finish(call, message, end) {
    if (call.over) {
      return;
    }
    call.over = true;
    release(call);
    if (current === call) {
      current = null;
      ended = end || { callId: call.callId, ratingToken: null, callbackReason: null };
      show("ended", message);
      if (!ui.callback.hidden) {
        forms.callback[0].input.focus();
      }
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
    finish(call, t("ended"));
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
          finish(call, phase === "connecting" ? t("unreachable") : t("connectionLost"));
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
          const position = Number.isInteger(message.position) ? message.position : 1;
          // Ringing an agent, or the first in line: the visitor hears ringback either way.
          show("ringing", message.ringing === false && position >= 1 ? t("queued", position) : t("ringing"));
        } else if (message.state === "answered") {
          answered(call);
        } else if (message.state === "ended") {
          const reasonKey = message.reason === "no_answer" || message.reason === "rejected" ? message.detail : null;
          finish(call, endMessage(message.reason, message.detail, message.message), {
            callId: call.callId,
            ratingToken: typeof message.rating_token === "string" ? message.rating_token : null,
            callbackReason: CALLBACK_REASONS[reasonKey] || null,
          });
        }
        break;
      case "answer":
        if (call.pc && typeof message.sdp === "string") {
          call.pc.setRemoteDescription({ type: "answer", sdp: message.sdp }).catch(() => {
            send(call, { type: "hangup" });
            finish(call, t("failed"));
          });
        }
        break;
      case "error":
        if (phase === "connecting") {
          const text = typeof message.message === "string" ? message.message.slice(0, 200) : "";
          if (message.code === "bad_message" && message.ref === "call" && forms.precall.length) {
            // The server refused the form's answers: back to the form, saying why.
            call.over = true;
            release(call);
            current = null;
            openForm(text);
          } else {
            finish(call, text ? `${t("failed")} (${text})` : t("failed"));
          }
        } else {
          console.warn("callbutton: the server refused a message:", message.code, message.message);
        }
        break;
      default:
        break;
    }
  }

  function answered(call) {
    show("in-call", t("inCall"));
    const started = Date.now();
    ui.timer.textContent = formatDuration(0);
    call.timer = setInterval(() => {
      ui.timer.textContent = formatDuration(Date.now() - started);
    }, 1000);
  }

  /** The button was clicked: the form, the closed message, or the call itself. */
  function begin() {
    if (current) {
      return;
    }
    if (unavailableMessage !== null) {
      ended = null;
      show("ended", unavailableMessage);
      return;
    }
    if (!button.open && linkToken === null) {
      ended = null;
      show("closed", button.closedMessage || t("closed"));
      forms.callback[0].input.focus();
      return;
    }
    if (forms.precall.length) {
      openForm(null);
      return;
    }
    startCall({});
  }

  async function startCall(answers) {
    if (current) {
      return;
    }
    const call = { ws: null, pc: null, stream: null, callId: null, sent: false, over: false, timer: null };
    current = call;
    ended = null;
    show("connecting", t("connecting"));

    if (!navigator.mediaDevices || typeof RTCPeerConnection !== "function") {
      finish(call, t("unsupported"));
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
      finish(call, t("unreachable"));
      return;
    }
    if (call.over) {
      return;
    }
    // The socket's greeting has the button as it is now: say so if this call will be recorded.
    const recordedBefore = button.recordingNotice;
    const info = hello.button || {};
    if (info.recording && typeof info.recording === "object") {
      button.recordingNotice =
        info.recording.enabled === true ? String(info.recording.notice || t("recorded")).slice(0, 500) : null;
    }
    if (button.recordingNotice !== recordedBefore) {
      show(phase, ui.status.textContent);
    }

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
          finish(call, t("mediaLost"));
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
      const request = { type: "call", sdp: pc.localDescription.sdp, page_url: pageUrl() };
      if (Object.keys(answers).length) {
        request.visitor = answers;
      }
      send(call, request);
      call.sent = true;
    } catch (error) {
      console.warn("callbutton: could not set up the call:", error);
      finish(call, t("failed"));
    }
  }

  ui.fab.addEventListener("click", begin);
  ui.hangup.addEventListener("click", hangUp);
  ui.again.addEventListener("click", () => {
    show("idle", "");
    begin();
  });
  ui.close.addEventListener("click", () => {
    show("idle", "");
    ui.fab.focus();
  });
  ui.root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && (phase === "form" || phase === "ended" || phase === "closed") && !inlineTarget) {
      show("idle", "");
      ui.fab.focus();
    }
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
    ui.live.textContent = muted ? t("muted") : t("unmuted");
  });
  window.addEventListener("pagehide", () => {
    if (current) {
      hangUp();
    }
  });

  // --- start --------------------------------------------------------------------------------------

  function unavailable(message) {
    unavailableMessage = t("unavailable", message.slice(0, 200));
    ui.fab.classList.add("unavailable");
    ui.fab.setAttribute("aria-label", t("unavailableLabel", button.name));
  }

  async function lookUp() {
    const path =
      linkToken !== null
        ? `/api/v1/call-links/${encodeURIComponent(linkToken)}`
        : `/api/v1/widget/${encodeURIComponent(key)}`;
    let response;
    try {
      response = await fetch(`${serverOrigin}${path}`, { credentials: "omit", cache: "no-store" });
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
    if (linkToken !== null) {
      if (!response.ok || !body || typeof body.button_key !== "string" || !KEY_PATTERN.test(body.button_key)) {
        unavailableMessage = t("linkUsed");
        ui.fab.hidden = true;
        show("ended", t("linkUsed"));
        ui.fab.hidden = true;
        return;
      }
      key = body.button_key;
      if (body.agent && typeof body.agent.name === "string" && body.agent.name) {
        button.name = body.agent.name.slice(0, 100);
      }
      learnButton(body.button);
      return;
    }
    if (response.status === 404) {
      console.warn("callbutton: no call button has this key; the button is hidden");
      host.remove();
      return;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message : `HTTP ${response.status}`;
      console.warn("callbutton: this call button cannot be used here:", message);
      unavailable(message);
      return;
    }
    if (!body) {
      return;
    }
    learnButton(body.button);
    if (body.open === false) {
      button.open = false;
      button.closedMessage = typeof body.closed_message === "string" ? body.closed_message.slice(0, 500) : null;
      ui.fab.classList.add("unavailable");
      ui.fab.setAttribute("aria-label", t("closedLabel", button.name));
      ui.fab.title = t("closedLabel", button.name);
    } else if (body.agents_available === false) {
      ui.fab.classList.add("unavailable");
      ui.fab.title = t("nobodyLabel", button.name);
    }
  }

  function mount() {
    buildForms();
    setLabels();
    show("idle", "");
    ui.fab.hidden = true; // shown once the lookup says the button exists
    const slot = inlineTarget ? document.getElementById(inlineTarget) : null;
    if (slot) {
      ui.root.classList.add("inline");
      slot.append(host);
    } else {
      document.body.append(host);
    }
    lookUp().finally(() => {
      if (phase === "idle" && !(linkToken !== null && unavailableMessage !== null)) {
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
