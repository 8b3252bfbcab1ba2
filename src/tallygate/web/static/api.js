// Calls to /api/v1 with the page's session cookie. State-changing calls carry the session's
// CSRF token; errors surface with the API's own message.

export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }

  get sessionEnded() {
    return this.status === 401;
  }
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, say): report the status line
  }
  const error = body?.error;
  return new ApiError(response.status, error?.message ?? `${response.status} ${response.statusText}`,
    error?.code ?? null, error?.param ?? null);
}

async function request(method, path, { params, body } = {}) {
  const url = params ? `${path}?${params}` : path;
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `The server cannot be reached (${err.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export function getJSON(path, params) {
  return request("GET", path, { params });
}

export function send(method, path, body) {
  return request(method, path, { body });
}

/** URLSearchParams from {name: value or [values]}, skipping empty values. */
export function searchParams(fields) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== null && item !== undefined && item !== "") params.append(name, item);
    }
  }
  return params;
}

/** Show an error in el: the API's message, and a sign-in link when the session ended. */
export function showError(el, error, t) {
  el.replaceChildren();
  const text = document.createElement("span");
  text.textContent = error.sessionEnded ? `${t("state.sessionEnded")} ` : `${error.message} `;
  el.append(text);
  if (error.sessionEnded) {
    const link = document.createElement("a");
    link.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    link.textContent = t("state.signInAgain");
    el.append(link);
  }
  el.hidden = false;
}
