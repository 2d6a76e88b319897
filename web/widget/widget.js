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
      // clips
      clipsTitle: "Show us the problem",
      sendFile: "Send a photo or file",
      takePhoto: "Take a photo",
      recordScreen: "Record screen",
      recordCamera: "Record camera",
      stopRecording: "Stop recording",
      recordingFor: (time) => `Recording… ${time}`,
      clipLimits: (mb, count) =>
        `JPEG or PNG photos up to ${Math.min(15, mb)} MB, WebM or MP4 videos up to ${mb} MB and 5 minutes, PDF documents up to ${Math.min(20, mb)} MB; ${count} files at most.`,
      clipsList: "Files sent",
      clipProgress: (name) => `Sending ${name}`,
      clipWaiting: "Waiting…",
      clipSending: (percent) => `Sending… ${percent}%`,
      clipChecking: "Checking…",
      clipRetrying: "Connection lost. Trying again…",
      clipDone: "Sent",
      clipCancelled: "Cancelled",
      clipFailed: "Not sent",
      clipSent: (name) => `${name} was sent.`,
      clipNotSent: (name, why) => `${name} was not sent: ${why}`,
      clipCancel: (name) => `Cancel sending ${name}`,
      clipRetry: (name) => `Retry sending ${name}`,
      cancelShort: "Cancel",
      retryShort: "Retry",
      clipType: "This kind of file cannot be sent. Accepted: JPEG or PNG photos, WebM or MP4 videos, PDF documents.",
      clipTooBig: (limit) => `This file is too large: at most ${limit} MB.`,
      clipEmpty: "This file is empty.",
      clipTooMany: (count) => `At most ${count} files can be sent.`,
      clipNetwork: "The connection was lost.",
      recordDenied: "Recording was not allowed.",
      recordFailed: "Recording could not start.",
      recordTooLong: "Recordings stop after 5 minutes.",
      screenRecording: "screen-recording.webm",
      cameraRecording: "camera-recording.webm",
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
      // clips
      clipsTitle: "Montrez-nous le problème",
      sendFile: "Envoyer une photo ou un fichier",
      takePhoto: "Prendre une photo",
      recordScreen: "Filmer l’écran",
      recordCamera: "Filmer avec la caméra",
      stopRecording: "Arrêter l’enregistrement",
      recordingFor: (time) => `Enregistrement… ${time}`,
      clipLimits: (mb, count) =>
        `Photos JPEG ou PNG jusqu’à ${Math.min(15, mb)} Mo, vidéos WebM ou MP4 jusqu’à ${mb} Mo et 5 minutes, documents PDF jusqu’à ${Math.min(20, mb)} Mo ; ${count} fichiers au plus.`,
      clipsList: "Fichiers envoyés",
      clipProgress: (name) => `Envoi de ${name}`,
      clipWaiting: "En attente…",
      clipSending: (percent) => `Envoi… ${percent} %`,
      clipChecking: "Vérification…",
      clipRetrying: "Connexion perdue. Nouvel essai…",
      clipDone: "Envoyé",
      clipCancelled: "Annulé",
      clipFailed: "Non envoyé",
      clipSent: (name) => `${name} a été envoyé.`,
      clipNotSent: (name, why) => `${name} n’a pas été envoyé : ${why}`,
      clipCancel: (name) => `Annuler l’envoi de ${name}`,
      clipRetry: (name) => `Réessayer l’envoi de ${name}`,
      cancelShort: "Annuler",
      retryShort: "Réessayer",
      clipType:
        "Ce type de fichier ne peut pas être envoyé. Acceptés : photos JPEG ou PNG, vidéos WebM ou MP4, documents PDF.",
      clipTooBig: (limit) => `Ce fichier est trop volumineux : ${limit} Mo au plus.`,
      clipEmpty: "Ce fichier est vide.",
      clipTooMany: (count) => `${count} fichiers au plus peuvent être envoyés.`,
      clipNetwork: "La connexion a été perdue.",
      recordDenied: "L’enregistrement n’a pas été autorisé.",
      recordFailed: "L’enregistrement n’a pas pu démarrer.",
      recordTooLong: "Les enregistrements s’arrêtent après 5 minutes.",
      screenRecording: "enregistrement-ecran.webm",
      cameraRecording: "enregistrement-camera.webm",
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
/* clips: files and recordings the visitor sends to support */
.clips { margin: 14px 0 0; padding: 12px 0 0; border-top: 1px solid #e3e8ed; }
.clips-title { margin: 0 0 8px; font-weight: 600; font-size: 14px; }
.clip-actions { display: flex; flex-wrap: wrap; gap: 8px; }
.clip-actions .clip-pick, .clip-actions button, .clip-item button {
  display: inline-flex; align-items: center; justify-content: center;
  min-height: 36px; padding: 6px 12px; border-radius: 18px; cursor: pointer;
  font: inherit; font-size: 14px; font-weight: 600; border: 1px solid #b8c2cc; background: #f4f6f8; color: #17212b;
}
.clip-actions .clip-pick { border-color: var(--accent); background: var(--accent); color: #fff; }
.clip-actions button:hover, .clip-actions .clip-pick:hover, .clip-item button:hover { filter: brightness(.95); }
.clip-actions button:disabled { cursor: default; opacity: .55; }
.clip-actions button.stop { background: #c62828; border-color: #c62828; color: #fff; }
.clip-pick input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.clip-limits { margin: 6px 0 0; font-size: 12px; color: #5b6773; }
.clip-recording { margin: 6px 0 0; font-size: 13px; font-weight: 600; font-variant-numeric: tabular-nums; }
.clip-recording::before {
  content: ""; display: inline-block; width: 8px; height: 8px; margin-right: 6px;
  border-radius: 50%; background: #c62828; vertical-align: 1px;
}
.clip-error { margin: 6px 0 0; font-size: 13px; color: #b3261e; }
.clip-list { list-style: none; margin: 8px 0 0; padding: 0; display: flex; flex-direction: column; gap: 8px; }
.clip-item { display: grid; grid-template-columns: 1fr auto; gap: 2px 8px; align-items: center; font-size: 13px; }
.clip-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.clip-item progress {
  grid-column: 1 / -1; width: 100%; height: 6px; border: 0; border-radius: 3px;
  appearance: none; -webkit-appearance: none; background: #e3e8ed; color: var(--accent); overflow: hidden;
}
.clip-item progress::-webkit-progress-bar { background: #e3e8ed; }
.clip-item progress::-webkit-progress-value { background: var(--accent); }
.clip-item progress::-moz-progress-bar { background: var(--accent); }
.clip-state { grid-column: 1 / -1; margin: 0; color: #5b6773; }
.clip-item[data-state="done"] .clip-state { color: #1a7f4b; font-weight: 600; }
.clip-item[data-state="failed"] .clip-state { color: #b3261e; }
.clip-item button { min-height: 30px; padding: 3px 10px; font-size: 13px; }
.clip-item[data-state="failed"] progress::-webkit-progress-value { background: #b3261e; }
.clip-item[data-state="failed"] progress::-moz-progress-bar { background: #b3261e; }
.clip-item[data-state="cancelled"] progress::-webkit-progress-value { background: #9aa5b1; }
.clip-item[data-state="cancelled"] progress::-moz-progress-bar { background: #9aa5b1; }
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
    setClipLabels();
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
    // Clips go with a call while it lasts, and with a callback request until the panel closes.
    if (clipTarget !== null && (clipTarget.callId ? !active : phase === "idle" || phase === "form" || active)) {
      setClipTarget(null);
    } else {
      renderClips();
    }
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
    const clips = info.clips;
    if (clips && typeof clips === "object") {
      clipSettings.perCall = clips.enabled === true ? Math.max(0, Math.min(50, Number(clips.per_call) || 0)) : 0;
      clipSettings.maxMb = Math.max(1, Math.min(100, Number(clips.max_mb) || 100));
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

  /** Like post, also with the answer's JSON: { problem, answer }. */
  async function postForAnswer(path, payload) {
    const response = await fetch(`${serverOrigin}${path}`, {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    if (response.ok) {
      return { problem: null, answer };
    }
    const problem = answer && typeof answer.message === "string" ? answer.message.slice(0, 300) : t("sendFailed");
    return { problem, answer: null };
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
    let answer = null;
    try {
      ({ problem, answer } = await postForAnswer(`/api/v1/widget/${encodeURIComponent(key)}/callbacks`, values));
    } catch {
      problem = t("unreachable");
    }
    if (problem) {
      showFormError(forms.callbackError, problem);
    } else {
      thank(ui.callback, t("callbackSent"));
      // The request's answer lets the visitor send photos or files with it.
      const sent = answer && answer.callback;
      if (sent && typeof sent.id === "string" && typeof sent.clip_token === "string" && sent.clip_token) {
        setClipTarget({ callbackId: sent.id, token: sent.clip_token });
      }
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
        if (typeof message.clip_token === "string" && message.clip_token && call.callId) {
          call.clipToken = message.clip_token;
        }
        if (message.state === "queued") {
          const position = Number.isInteger(message.position) ? message.position : 1;
          // Ringing an agent, or the first in line: the visitor hears ringback either way.
          show("ringing", message.ringing === false && position >= 1 ? t("queued", position) : t("ringing"));
        } else if (message.state === "answered") {
          answered(call);
        }
        if (message.state !== "ended" && call.clipToken && current === call) {
          setClipTarget({ callId: call.callId, token: call.clipToken });
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
    const call = { ws: null, pc: null, stream: null, callId: null, sent: false, over: false, timer: null, clipToken: null };
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

  // --- clips: photos, videos, documents and recordings sent to support ------------------------------
  //
  // During a call (with the clip_token of its call_state messages) and after a callback request
  // (with the clip_token of the request's answer), the visitor may send files: chosen, taken with
  // the phone's camera, or recorded from the screen or camera (MediaRecorder, WebM). Each goes up in
  // chunks (POST .../clips, PUT .../clips/{id}?offset=N, POST .../clips/{id}/complete); after a
  // network error the upload asks how far it got and goes on from there. What the server says is
  // refused is shown as it says it. Nothing is previewed: the host page's CSP may allow no images.

  const CLIP_TYPES = {
    "image/jpeg": "image",
    "image/png": "image",
    "video/webm": "video",
    "video/mp4": "video",
    "application/pdf": "document",
  };
  const CLIP_EXTENSIONS = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webm: "video/webm", mp4: "video/mp4", pdf: "application/pdf" };
  const CLIP_LIMIT_MB = { image: 15, video: 100, document: 20 };
  // The button's limits (its `clips` settings), learnt with the button; 0 clips: it takes none.
  const clipSettings = { perCall: 20, maxMb: 100 };
  const MAX_RECORDING_MS = 5 * 60 * 1000;
  const CLIP_RETRY_MS = [1000, 2000, 4000, 8000];
  const CLIP_ACCEPT = Object.keys(CLIP_TYPES).join(",");

  /** Where clips go now: { callId } or { callbackId }, with its token; null when nothing may be sent. */
  let clipTarget = null;
  let clipCount = 0; // clips sent or being sent with the current target
  let recorder = null; // { media, stream, source, started, timer, chunks, stopped }

  const clipUi = {
    section: el("section", { class: "clips", hidden: "" }),
    title: el("p", { class: "clips-title", id: `cb-clips-${++uid}` }),
    actions: el("div", { class: "clip-actions" }),
    pickLabel: el("label", { class: "clip-pick" }),
    pickText: el("span", {}),
    pick: el("input", { type: "file", accept: CLIP_ACCEPT, multiple: "" }),
    photoLabel: el("label", { class: "clip-pick photo", hidden: "" }),
    photoText: el("span", {}),
    photo: el("input", { type: "file", accept: "image/jpeg,image/png", capture: "environment" }),
    screen: el("button", { type: "button", class: "record-screen", "aria-pressed": "false" }),
    camera: el("button", { type: "button", class: "record-camera", "aria-pressed": "false" }),
    limits: el("p", { class: "clip-limits", id: `cb-clip-limits-${++uid}` }),
    recording: el("p", { class: "clip-recording", role: "timer", hidden: "" }),
    error: el("p", { class: "clip-error", role: "alert", hidden: "" }),
    list: el("ul", { class: "clip-list", hidden: "" }),
  };
  clipUi.pickLabel.append(clipUi.pickText, clipUi.pick);
  clipUi.photoLabel.append(clipUi.photoText, clipUi.photo);
  clipUi.actions.append(clipUi.pickLabel, clipUi.photoLabel, clipUi.screen, clipUi.camera);
  clipUi.section.setAttribute("aria-labelledby", clipUi.title.id);
  clipUi.pick.setAttribute("aria-describedby", clipUi.limits.id);
  clipUi.section.append(clipUi.title, clipUi.actions, clipUi.limits, clipUi.recording, clipUi.error, clipUi.list);
  ui.panel.insertBefore(clipUi.section, ui.panel.querySelector(".controls"));

  const canRecord = typeof MediaRecorder === "function" && !!navigator.mediaDevices;
  const canRecordScreen = canRecord && typeof navigator.mediaDevices.getDisplayMedia === "function";
  const canRecordCamera = canRecord && typeof navigator.mediaDevices.getUserMedia === "function";
  const coarsePointer = typeof matchMedia === "function" && matchMedia("(pointer: coarse)").matches;

  function setClipLabels() {
    clipUi.title.textContent = t("clipsTitle");
    clipUi.pickText.textContent = t("sendFile");
    clipUi.pick.setAttribute("aria-label", t("sendFile"));
    clipUi.photoText.textContent = t("takePhoto");
    clipUi.photo.setAttribute("aria-label", t("takePhoto"));
    clipUi.limits.textContent = t("clipLimits", clipSettings.maxMb, clipSettings.perCall);
    clipUi.list.setAttribute("aria-label", t("clipsList"));
    renderRecordButtons();
  }

  function renderRecordButtons() {
    for (const [button, source, label] of [
      [clipUi.screen, "screen", "recordScreen"],
      [clipUi.camera, "camera", "recordCamera"],
    ]) {
      const mine = recorder !== null && recorder.source === source;
      button.textContent = mine ? t("stopRecording") : t(label);
      button.classList.toggle("stop", mine);
      button.setAttribute("aria-pressed", String(mine));
      button.disabled = recorder !== null && !mine;
    }
    clipUi.screen.hidden = !canRecordScreen;
    clipUi.camera.hidden = !canRecordCamera;
  }

  /** The clip controls show while the visitor may send; the list while it has something. */
  function renderClips() {
    const open =
      clipTarget !== null && clipSettings.perCall > 0 && (clipTarget.callId ? phase === "in-call" : true);
    clipUi.actions.hidden = !open;
    clipUi.limits.hidden = !open;
    clipUi.title.hidden = !open && clipUi.list.childElementCount === 0;
    clipUi.photoLabel.hidden = !coarsePointer;
    clipUi.list.hidden = clipUi.list.childElementCount === 0;
    clipUi.section.hidden = !open && clipUi.list.childElementCount === 0 && clipUi.error.hidden;
  }

  function clipError(message) {
    clipUi.error.textContent = message || "";
    clipUi.error.hidden = !message;
    renderClips();
  }

  /** Clips now go with ``target`` ({ callId | callbackId, token }), or nowhere (null). */
  function setClipTarget(target) {
    const same =
      target !== null &&
      clipTarget !== null &&
      target.callId === clipTarget.callId &&
      target.callbackId === clipTarget.callbackId;
    if (!same) {
      stopRecording(false); // a recording in progress is sent where it began
      if (target !== null) {
        clipCount = 0;
        // A new call or request: what was sent before is forgotten, what is still going carries on.
        for (const item of [...clipUi.list.children]) {
          if (item.dataset.state !== "sending") {
            item.remove();
          }
        }
        clipError("");
      }
    }
    clipTarget = target;
    renderClips();
  }

  function clipOwner(target) {
    return target.callId ? { call_id: target.callId } : { callback_id: target.callbackId };
  }

  function clipUrl(path) {
    return `${serverOrigin}/api/v1/widget/${encodeURIComponent(key)}/clips${path}`;
  }

  /** The server's JSON answer, or null; ``problem`` its message (verbatim) when it refused. */
  async function readAnswer(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const problem =
      response.ok || !body || typeof body.message !== "string" ? null : body.message.slice(0, 300);
    return { body: body && typeof body === "object" ? body : null, problem };
  }

  class ClipRefused extends Error {}

  function formatSize(bytes) {
    return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} kB`;
  }

  /** What the browser says the file is (or its extension, when it says nothing). */
  function clipType(file) {
    if (file.type) {
      return file.type.split(";")[0].trim().toLowerCase();
    }
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    return CLIP_EXTENSIONS[extension] || "";
  }

  /** Why ``file`` cannot be sent, checked here before the upload (the server checks again), or null. */
  function clipProblem(file, type) {
    const kind = CLIP_TYPES[type];
    if (!kind) {
      return t("clipType");
    }
    if (file.size === 0) {
      return t("clipEmpty");
    }
    const limitMb = Math.min(CLIP_LIMIT_MB[kind], clipSettings.maxMb);
    if (file.size > limitMb * 1024 * 1024) {
      return t("clipTooBig", limitMb);
    }
    if (clipCount >= clipSettings.perCall) {
      return t("clipTooMany", clipSettings.perCall);
    }
    return null;
  }

  function sendFiles(files) {
    if (clipTarget === null) {
      return;
    }
    clipError("");
    for (const file of files) {
      const type = clipType(file);
      const problem = clipProblem(file, type);
      if (problem) {
        clipError(`${file.name.slice(0, 100)}: ${problem}`);
        continue;
      }
      clipCount += 1;
      startClip(file, type, clipTarget);
    }
  }

  /** One clip's upload and its line in the list. */
  function startClip(file, type, target) {
    const name = (file.name || "clip").slice(0, 200);
    const item = {
      file,
      name,
      type,
      target,
      id: null,
      chunkBytes: 1024 * 1024,
      received: 0,
      controller: null,
      cancelled: false,
      final: false, // refused by the server: a retry would be refused again
      element: el("li", { class: "clip-item", "data-state": "sending" }),
      label: el("span", { class: "clip-name" }, `${name} (${formatSize(file.size)})`),
      bar: el("progress", { max: "100", value: "0", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }),
      state: el("p", { class: "clip-state" }),
      cancel: el("button", { type: "button", class: "clip-cancel" }, t("cancelShort")),
      retry: el("button", { type: "button", class: "clip-retry", hidden: "" }, t("retryShort")),
    };
    item.label.title = name;
    item.bar.setAttribute("role", "progressbar");
    item.bar.setAttribute("aria-label", t("clipProgress", name));
    item.cancel.setAttribute("aria-label", t("clipCancel", name));
    item.retry.setAttribute("aria-label", t("clipRetry", name));
    item.element.append(item.label, el("span", {}, item.cancel, item.retry), item.bar, item.state);
    item.cancel.addEventListener("click", () => cancelClip(item));
    item.retry.addEventListener("click", () => {
      item.retry.hidden = true;
      item.cancel.hidden = false;
      item.cancelled = false;
      item.element.setAttribute("data-state", "sending");
      uploadClip(item);
      item.cancel.focus();
    });
    clipUi.list.append(item.element);
    renderClips();
    clipState(item, t("clipWaiting"));
    uploadClip(item);
  }

  function clipProgress(item) {
    const percent = item.file.size ? Math.floor((item.received * 100) / item.file.size) : 0;
    item.bar.value = percent;
    item.bar.setAttribute("aria-valuenow", String(percent));
    item.bar.setAttribute("aria-valuetext", `${percent}%`);
    clipState(item, t("clipSending", percent));
  }

  function clipState(item, message) {
    item.state.textContent = message;
  }

  function clipFinished(item, state, message, announce) {
    item.element.setAttribute("data-state", state);
    const hadFocus = item.element.contains(shadow.activeElement);
    item.cancel.hidden = true;
    item.retry.hidden = state !== "failed" || item.final === true;
    clipState(item, message);
    if (state === "done") {
      item.bar.value = 100;
      item.bar.setAttribute("aria-valuenow", "100");
      item.bar.setAttribute("aria-valuetext", "100%");
    }
    if (announce) {
      ui.live.textContent = announce;
    }
    if (hadFocus) {
      (item.retry.hidden ? clipUi.pick : item.retry).focus();
    }
  }

  function cancelClip(item) {
    item.cancelled = true;
    if (item.controller) {
      item.controller.abort();
    }
    if (item.id) {
      // Tell the server, so that the upload no longer counts (best effort: it expires anyway).
      fetch(clipUrl(`/${encodeURIComponent(item.id)}`), {
        method: "DELETE",
        credentials: "omit",
        cache: "no-store",
        headers: { "X-Clip-Token": item.target.token },
      }).catch(() => {});
    }
    clipCount = Math.max(0, clipCount - 1);
    clipFinished(item, "cancelled", t("clipCancelled"), t("clipCancelled"));
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /** A request of the upload: JSON answer, or ClipRefused (the server said no), or a network error. */
  async function clipRequest(item, method, path, options) {
    item.controller = new AbortController();
    const headers = { ...(options && options.headers) };
    if (item.id) {
      headers["X-Clip-Token"] = item.target.token;
    }
    const response = await fetch(clipUrl(path), {
      method,
      credentials: "omit",
      cache: "no-store",
      signal: item.controller.signal,
      headers,
      body: options && options.body,
    });
    const { body, problem } = await readAnswer(response);
    if (response.ok && body && body.clip && typeof body.clip === "object") {
      return body.clip;
    }
    if (response.status >= 500 || response.status === 429) {
      throw new Error(`HTTP ${response.status}`); // worth another try
    }
    const error = new ClipRefused(problem || t("sendFailed"));
    error.status = response.status;
    error.code = body && typeof body.error === "string" ? body.error : "";
    throw error;
  }

  async function uploadClip(item) {
    let failures = 0;
    for (;;) {
      if (item.cancelled) {
        return;
      }
      try {
        await uploadSteps(item);
        return;
      } catch (error) {
        if (item.cancelled) {
          return;
        }
        if (error instanceof ClipRefused) {
          refused(item, error);
          clipFinished(item, "failed", `${t("clipFailed")}: ${error.message}`, t("clipNotSent", item.name, error.message));
          return;
        }
        if (failures >= CLIP_RETRY_MS.length) {
          clipFinished(item, "failed", `${t("clipFailed")}: ${t("clipNetwork")}`, t("clipNotSent", item.name, t("clipNetwork")));
          return;
        }
        clipState(item, t("clipRetrying"));
        await sleep(CLIP_RETRY_MS[failures]);
        failures += 1;
        if (item.id) {
          // Resume where the server is: it says how many bytes it has (or that the clip is done).
          try {
            const status = await clipRequest(item, "GET", `/${encodeURIComponent(item.id)}`);
            if (status.state === "ready") {
              clipFinished(item, "done", t("clipDone"), t("clipSent", item.name));
              return;
            }
            if (Number.isInteger(status.received) && status.received >= 0) {
              item.received = Math.min(status.received, item.file.size);
            }
          } catch (statusError) {
            if (statusError instanceof ClipRefused && !item.cancelled) {
              refused(item, statusError);
              clipFinished(item, "failed", `${t("clipFailed")}: ${statusError.message}`, t("clipNotSent", item.name, statusError.message));
              return;
            }
            // Still unreachable: the next round tries again.
          }
        }
      }
    }
  }

  /** The server refused the clip: it does not count, and only a lost upload is worth retrying. */
  function refused(item, error) {
    if (item.target === clipTarget) {
      clipCount = error.code === "too_many" ? clipSettings.perCall : Math.max(0, clipCount - 1);
    }
    if (item.id && (error.code === "not_found" || error.code === "no_upload")) {
      // The upload is gone (it expired, or the server restarted): a retry starts it again.
      item.id = null;
      item.received = 0;
      clipCount += item.target === clipTarget ? 1 : 0;
    } else {
      item.final = true;
    }
  }

  async function uploadSteps(item) {
    if (!item.id) {
      const created = await clipRequest(item, "POST", "", {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          ...clipOwner(item.target),
          token: item.target.token,
          name: item.name,
          size: item.file.size,
          type: item.type,
        }),
      });
      if (typeof created.id !== "string") {
        throw new ClipRefused(t("sendFailed"));
      }
      item.id = created.id;
      item.received = Number.isInteger(created.received) ? created.received : 0;
      if (Number.isInteger(created.chunk_bytes) && created.chunk_bytes > 0) {
        item.chunkBytes = created.chunk_bytes;
      }
    }
    clipProgress(item);
    while (item.received < item.file.size) {
      const end = Math.min(item.file.size, item.received + item.chunkBytes);
      let answer;
      try {
        answer = await clipRequest(item, "PUT", `/${encodeURIComponent(item.id)}?offset=${item.received}`, {
          headers: { "Content-Type": "application/octet-stream" },
          body: item.file.slice(item.received, end),
        });
      } catch (error) {
        if (error instanceof ClipRefused && error.code === "wrong_offset") {
          // The server has another count (a chunk's answer was lost): ask it, and go on from there.
          const status = await clipRequest(item, "GET", `/${encodeURIComponent(item.id)}`);
          item.received = Math.min(Number(status.received) || 0, item.file.size);
          continue;
        }
        throw error;
      }
      item.received = Number.isInteger(answer.received) ? answer.received : end;
      clipProgress(item);
    }
    clipState(item, t("clipChecking"));
    try {
      await clipRequest(item, "POST", `/${encodeURIComponent(item.id)}/complete`);
    } catch (error) {
      if (error instanceof ClipRefused && error.code === "incomplete") {
        const status = await clipRequest(item, "GET", `/${encodeURIComponent(item.id)}`);
        item.received = Math.min(Number(status.received) || 0, item.file.size);
        return uploadSteps(item);
      }
      throw error;
    }
    item.controller = null;
    clipFinished(item, "done", t("clipDone"), t("clipSent", item.name));
  }

  // Recording the screen or the camera: WebM from MediaRecorder, at most five minutes.

  function recorderType() {
    for (const type of ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"]) {
      if (typeof MediaRecorder.isTypeSupported !== "function" || MediaRecorder.isTypeSupported(type)) {
        return type;
      }
    }
    return "";
  }

  async function startRecording(source) {
    if (recorder !== null || clipTarget === null) {
      return;
    }
    clipError("");
    if (clipCount >= clipSettings.perCall) {
      clipError(t("clipTooMany", clipSettings.perCall));
      return;
    }
    const target = clipTarget;
    let stream;
    try {
      stream =
        source === "screen"
          ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false })
          : await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (error) {
      const name = error && error.name;
      clipError(name === "NotAllowedError" || name === "SecurityError" ? t("recordDenied") : t("recordFailed"));
      return;
    }
    if (clipTarget !== target || recorder !== null) {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    let media;
    try {
      const mimeType = recorderType();
      media = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    } catch {
      stream.getTracks().forEach((track) => track.stop());
      clipError(t("recordFailed"));
      return;
    }
    const rec = { media, stream, source, target, started: Date.now(), timer: null, chunks: [], discard: false };
    recorder = rec;
    media.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) {
        rec.chunks.push(event.data);
      }
    });
    media.addEventListener("stop", () => recordingStopped(rec));
    // The browser's own "Stop sharing" ends the track: that ends the recording too.
    for (const track of stream.getVideoTracks()) {
      track.addEventListener("ended", () => stopRecording(false));
    }
    media.start(1000);
    const tick = () => {
      const elapsed = Date.now() - rec.started;
      clipUi.recording.textContent = t("recordingFor", formatDuration(elapsed));
      if (elapsed >= MAX_RECORDING_MS) {
        clipUi.recording.textContent = t("recordTooLong");
        stopRecording(false);
      }
    };
    tick();
    rec.timer = setInterval(tick, 500);
    clipUi.recording.hidden = false;
    renderRecordButtons();
    (source === "screen" ? clipUi.screen : clipUi.camera).focus();
  }

  /** Stop the recording in progress; it is sent, unless ``discard``. */
  function stopRecording(discard) {
    const rec = recorder;
    if (rec === null) {
      return;
    }
    rec.discard = discard;
    clearInterval(rec.timer);
    if (rec.media.state !== "inactive") {
      rec.media.stop(); // "stop" follows, with the last data
    } else {
      recordingStopped(rec);
    }
  }

  function recordingStopped(rec) {
    if (recorder !== rec) {
      return;
    }
    recorder = null;
    clearInterval(rec.timer);
    rec.stream.getTracks().forEach((track) => track.stop());
    clipUi.recording.hidden = true;
    renderRecordButtons();
    if (rec.discard || !rec.chunks.length) {
      return;
    }
    const name = rec.source === "screen" ? t("screenRecording") : t("cameraRecording");
    const file = new File(rec.chunks, name, { type: "video/webm" });
    const problem = clipProblem(file, "video/webm");
    if (problem) {
      clipError(`${name}: ${problem}`);
      return;
    }
    clipCount += 1;
    startClip(file, "video/webm", rec.target);
  }

  clipUi.pick.addEventListener("change", () => {
    sendFiles([...clipUi.pick.files]);
    clipUi.pick.value = ""; // the same file may be chosen again
  });
  clipUi.photo.addEventListener("change", () => {
    sendFiles([...clipUi.photo.files]);
    clipUi.photo.value = "";
  });
  for (const [button, source] of [
    [clipUi.screen, "screen"],
    [clipUi.camera, "camera"],
  ]) {
    button.addEventListener("click", () => {
      if (recorder !== null && recorder.source === source) {
        stopRecording(false);
      } else {
        startRecording(source);
      }
    });
  }

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
