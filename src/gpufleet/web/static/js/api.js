// Talking to the gpufleet API: the credential (sessionStorage only: gone when the tab closes),
// problem+json errors, Server-Sent Events over fetch (EventSource cannot send a credential),
// and the permission table the server hands out.

const CREDENTIAL = "gpufleet.credential";
const ORGANIZATION = "gpufleet.organization";

export const session = {
  get credential() {
    return sessionStorage.getItem(CREDENTIAL);
  },
  get organization() {
    return sessionStorage.getItem(ORGANIZATION);
  },
  signIn(credential, organization = null) {
    sessionStorage.setItem(CREDENTIAL, credential.trim());
    if (organization) sessionStorage.setItem(ORGANIZATION, organization);
    else sessionStorage.removeItem(ORGANIZATION);
  },
  setOrganization(organization) {
    sessionStorage.setItem(ORGANIZATION, organization);
  },
  signOut() {
    sessionStorage.removeItem(CREDENTIAL);
    sessionStorage.removeItem(ORGANIZATION);
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

const listeners = new Set();
/** Called with no argument when the server refuses the credential (401). */
export function onUnauthorized(fn) {
  listeners.add(fn);
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const credential = session.credential;
  if (credential) out.Authorization = `Bearer ${credential}`;
  // A Supabase session may belong to several organizations; an API key belongs to one.
  if (credential && !credential.startsWith("gfk_") && session.organization) {
    out["X-Gpufleet-Organization"] = session.organization;
  }
  return out;
}

/** Throws the ApiError of a refused answer (its problem+json, if any); a 401 tells the listeners. */
async function throwIfRefused(r) {
  if (r.status === 401) listeners.forEach((fn) => fn());
  if (r.ok) return;
  let problem = null;
  try {
    problem = await r.json();
  } catch {
    problem = null;
  }
  throw new ApiError(r.status, problem);
}

export function url(path, params) {
  const u = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) u.searchParams.append(key, v);
  }
  return u.pathname + u.search;
}

export async function api(path, { method = "GET", params, body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url(path, params), init);
  await throwIfRefused(r);
  if (r.status === 204) return null;
  return r.json();
}

/** Server-Sent Events of ``path``: calls onEvent({event, id, data}) until the stream ends. */
export async function sse(path, { params, lastEventId, signal, onEvent }) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId) extra["Last-Event-ID"] = lastEventId;
  const r = await fetch(url(path, params), { headers: headers(extra), signal });
  await throwIfRefused(r);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (event.data.length) onEvent({ event: event.event, id: event.id, data: event.data.join("\n") });
        event = { event: "message", id: null, data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = val;
        else if (field === "id") event.id = val;
        else if (field === "data") event.data.push(val);
      }
    }
  }
}

// ------------------------------------------------------------------------------ who may do what

let config = { roles: ["viewer", "member", "admin", "owner"], permissions: {}, supabase: false };
let me = null;

export async function loadConfig() {
  const r = await fetch("/ui/config.json");
  config = await r.json();
  return config;
}

export function uiConfig() {
  return config;
}

export async function loadMe() {
  me = await api("/v1/me");
  return me;
}

export function currentMe() {
  return me;
}

/** May the signed-in credential perform ``action`` (a name of the API's permission table)? */
export function can(action) {
  if (!me || !(action in config.permissions)) return false;
  return config.roles.indexOf(me.role) >= config.roles.indexOf(config.permissions[action]);
}
