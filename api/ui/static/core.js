// The dashboard's shared parts: the credential, the API, small DOM helpers, navigation and
// the live streams. Views import what they use; nothing here knows of any view.

export const CREDENTIAL = "wrench.credential";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");

// -- credentials and the API ---------------------------------------------------------------
export function credential() {
  const stored = sessionStorage.getItem(CREDENTIAL);
  return stored ? JSON.parse(stored) : null;
}

export function authHeaders(cred = credential()) {
  if (!cred) return {};
  return cred.kind === "key" ? { "X-API-Key": cred.token } : { Authorization: `Bearer ${cred.token}` };
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

export async function api(path, { method = "GET", body, cred } = {}) {
  const headers = { ...authHeaders(cred), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && !cred) {
    window.dispatchEvent(new CustomEvent("wrench:expired"));
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function announce(message) {
  statusLine.textContent = message;
}

// -- small DOM helpers ---------------------------------------------------------------------
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function show(...nodes) {
  main.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined && node !== false));
  main.focus();
}

export function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}


// -- navigation ----------------------------------------------------------------------------
// go() changes the address and asks the router (app.js) to show it. A view registers what
// to stop when it is left (its live streams) with onLeave().
export function go(path) {
  history.pushState({}, "", path);
  window.dispatchEvent(new CustomEvent("wrench:navigate"));
}

let leaving = [];

export function onLeave(stop) {
  leaving.push(stop);
}

export function leaveView() {
  for (const stop of leaving) stop();
  leaving = [];
}

// -- live streams --------------------------------------------------------------------------
// Opens a WebSocket stream of the API (first message: the credential) and calls
// onEvent(event, position) for each event; a read given that position as ?wait_for=
// includes it. Control messages ({"type": "authenticated" | "live" | "status" | "error" |
// ...}) go to onControl(message, send), where send(object) writes a message to the socket.
// A dropped stream is opened again (a task's stream resuming after the last position seen);
// a task's stream that says it ended is not. Returns a function that closes it for good.
export function liveStream(path, onEvent, { resumable = false, onControl = () => {} } = {}) {
  let socket;
  let closed = false;
  let retry = 1000;
  let resume = null;
  const send = (message) => {
    if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${path}`);
    socket.addEventListener("open", () => {
      const first = { type: "auth", token: credential()?.token };
      if (resumable && resume) first.resume_from = resume;
      send(first);
      retry = 1000;
    });
    socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.event) {
        resume = data.position;
        onEvent(data.event, data.position);
        return;
      }
      if (data.type === "end") closed = true;
      // The server closes a socket that does not answer its pings.
      if (data.type === "ping") send({ type: "pong" });
      onControl(data, send);
    });
    socket.addEventListener("close", () => {
      if (!closed) setTimeout(open, (retry = Math.min(retry * 2, 15000)));
    });
  };
  open();
  return () => {
    closed = true;
    socket?.close();
  };
}

// An onEvent for liveStream that reads once per burst of events, 200 ms after its first,
// with the last position seen as ?wait_for=, so the read includes the whole burst.
export function onceAfter(load) {
  let pending = null;
  let last = null;
  return (event, position) => {
    last = position ?? last;
    pending ??= setTimeout(() => { const at = last; pending = null; last = null; load(at); }, 200);
  };
}

// How often a page following the tenant's events reads again with no event: the stream
// carries what happens from its start on, so what was published just before it started,
// or while it was reconnecting, and projected only later, shows within this time.
const QUIET_READ_MS = 10000;

// The tenant's events, live (GET /ws/events with the query's filters). onEvent(event,
// position) is also called with no event once the stream is live, and every QUIET_READ_MS
// while the page is visible.
export function liveEvents(onEvent, query = "") {
  const stop = liveStream(`/ws/events${query}`, onEvent, {
    onControl: (message) => { if (message.type === "live") onEvent(null, null); },
  });
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") onEvent(null, null);
  }, QUIET_READ_MS);
  return () => {
    clearInterval(timer);
    stop();
  };
}
