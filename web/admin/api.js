/*
 * The REST API (/api/v1) as the admin console uses it: same-origin fetches with the session cookie,
 * JSON both ways, and errors as the server words them ({"error": code, "message": text}).
 */

/** Who is logged in (``me``: the /api/v1/me user, or null). */
export const session = { me: null };

let sessionEnded = () => {};

/** ``handler(notice)`` runs when a request finds the session gone (a 401 while logged in). */
export function onSessionEnded(handler) {
  sessionEnded = handler;
}

/** ``{status, ok, body}`` of a request; ``body`` is the parsed JSON, or null. Never throws. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      credentials: "same-origin",
      headers: options.body ? { "Content-Type": "application/json" } : {},
      ...options,
    });
  } catch {
    return { status: 0, ok: false, body: { message: "The server cannot be reached. Check the connection." } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401 && path !== "/api/v1/session" && session.me) {
    sessionEnded("Your session has ended. Log in again.");
  }
  return { status: response.status, ok: response.ok, body };
}

export function send(method, path, data) {
  return api(path, { method, body: JSON.stringify(data) });
}

/** The server's message for a refused request. */
export function message(result) {
  return (result.body && result.body.message) || `Error ${result.status}`;
}

/** ``path`` with the non-empty ``params`` as its query string. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) {
      query.set(name, value);
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
