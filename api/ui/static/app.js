// The WrenchAI dashboard: signs in, then uses only the public API and its live streams.
// The credential (an API key, or a user's access token) stays in this tab's sessionStorage.

const CREDENTIAL = "wrench.credential";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");

// -- credentials and the API ---------------------------------------------------------------
function credential() {
  const stored = sessionStorage.getItem(CREDENTIAL);
  return stored ? JSON.parse(stored) : null;
}

function authHeaders(cred = credential()) {
  if (!cred) return {};
  return cred.kind === "key" ? { "X-API-Key": cred.token } : { Authorization: `Bearer ${cred.token}` };
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(path, { method = "GET", body, cred } = {}) {
  const headers = { ...authHeaders(cred), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && !cred) {
    signOut("Your sign-in has ended: sign in again.");
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function announce(message) {
  statusLine.textContent = message;
}

// -- small DOM helpers ---------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
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

function show(...nodes) {
  main.replaceChildren(...nodes);
  main.focus();
}

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

// -- navigation ----------------------------------------------------------------------------
function go(path) {
  history.pushState({}, "", path);
  route();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='/ui']");
  if (link && !event.metaKey && !event.ctrlKey) {
    event.preventDefault();
    go(link.getAttribute("href"));
  }
});
window.addEventListener("popstate", () => route());

let leave = () => {};

async function route() {
  leave();
  leave = () => {};
  const cred = credential();
  document.getElementById("nav").hidden = !cred;
  document.getElementById("who").hidden = !cred;
  if (!cred) return signIn();
  document.getElementById("principal").textContent = cred.label || "";
  const task = location.pathname.match(/^\/ui\/tasks\/([0-9a-f-]{36})$/);
  if (task) return taskView(task[1]);
  return tasksView();
}

function signOut(message) {
  sessionStorage.removeItem(CREDENTIAL);
  history.replaceState({}, "", "/ui");
  route();
  if (message) announce(message);
}
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));

// -- sign in -------------------------------------------------------------------------------
function signIn() {
  const error = h("p", { class: "error", role: "alert" });
  let mode = "key";
  const keyFields = h("div", { class: "stack" },
    h("label", {}, "API key", h("input", { name: "key", type: "password", autocomplete: "off", required: true })));
  const userFields = h("div", { class: "stack", hidden: true },
    h("label", {}, "User name", h("input", { name: "username", autocomplete: "username" })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password" })));
  const tab = (name, label) => h("button", {
    type: "button", role: "tab", "aria-selected": String(name === mode), id: `tab-${name}`,
    onclick: () => {
      mode = name;
      keyFields.hidden = name !== "key";
      userFields.hidden = name !== "user";
      for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.id === `tab-${name}`));
    },
  }, label);
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "How to sign in" },
    tab("key", "API key"), tab("user", "User and password"));
  const form = h("form", { class: "stack", "aria-label": "Sign in" }, tabs, keyFields, userFields,
    h("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    try {
      let cred;
      if (mode === "key") {
        cred = { kind: "key", token: String(data.get("key") || "").trim() };
      } else {
        const response = await fetch("/auth/token", {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({
            grant_type: "password", username: String(data.get("username") || ""),
            password: String(data.get("password") || ""),
          }),
        });
        const body = await response.json();
        if (!response.ok) throw new ApiError(response.status, body);
        cred = { kind: "bearer", token: body.access_token };
      }
      const me = await api("/auth/me", { cred });
      cred.label = `${me.tenant_id} · ${me.role || me.credential}`;
      cred.scopes = me.scopes;
      sessionStorage.setItem(CREDENTIAL, JSON.stringify(cred));
      if (location.pathname === "/ui" || location.pathname === "/ui/") history.replaceState({}, "", "/ui/tasks");
      route();
      announce("Signed in.");
    } catch (exc) {
      error.textContent = exc.status === 401 ? "That credential was not accepted." : exc.message;
    }
  });
  show(h("h1", {}, "Sign in"), h("section", { class: "card" }, form));
}

// -- live streams --------------------------------------------------------------------------
// Opens a WebSocket stream of the API (first message: the credential) and calls
// onEvent(event, position) for each event; a read given that position as ?wait_for=
// includes it. A dropped stream is opened again (a task's stream resuming after the last
// position seen); a task's stream that says it ended is not.
function liveStream(path, onEvent, { resumable = false } = {}) {
  let socket;
  let closed = false;
  let retry = 1000;
  let resume = null;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${path}`);
    socket.addEventListener("open", () => {
      const first = { type: "auth", token: credential()?.token };
      if (resumable && resume) first.resume_from = resume;
      socket.send(JSON.stringify(first));
      retry = 1000;
    });
    socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.event) {
        resume = data.position;
        onEvent(data.event, data.position);
      } else if (data.type === "end") {
        closed = true;
      }
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
function onceAfter(load) {
  let pending = null;
  let last = null;
  return (event, position) => {
    last = position;
    pending ??= setTimeout(() => { pending = null; load(last); }, 200);
  };
}

function liveEvents(onEvent, query = "") {
  return liveStream(`/ws/events${query}`, onEvent);
}

// -- tasks ---------------------------------------------------------------------------------
async function tasksView() {
  const params = new URLSearchParams(location.search);
  const rows = h("tbody");
  const table = h("table", { "aria-label": "Tasks" },
    h("thead", {}, h("tr", {}, ["Task", "Status", "Playbook", "Age", ""].map((c) => h("th", { scope: "col" }, c)))),
    rows);
  const error = h("p", { class: "error", role: "alert" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter tasks" },
    h("label", {}, "Search", h("input", { name: "q", type: "search", value: params.get("q") || "" })),
    h("label", {}, "Status", h("select", { name: "status" },
      ["", "submitted", "running", "completed", "failed", "cancelled"].map((s) =>
        h("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")))),
    h("button", { type: "submit", class: "secondary" }, "Filter"));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(filters);
    const query = new URLSearchParams([...data].filter(([, v]) => v));
    go(`/ui/tasks${query.toString() ? `?${query}` : ""}`);
  });

  const load = async (position) => {
    const query = new URLSearchParams({ limit: "50" });
    if (position) query.set("wait_for", position);
    for (const name of ["q", "status"]) if (params.get(name)) query.set(name, params.get(name));
    try {
      const page = await api(`/tasks?${query}`);
      rows.replaceChildren(...page.tasks.map(taskRow));
      if (!page.tasks.length) rows.append(h("tr", {}, h("td", { colspan: 5 }, "No task yet.")));
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  show(h("h1", {}, "Tasks"), submitForm(load), filters, error, table);
  await load();
  leave = liveEvents(onceAfter(load));
}

function taskRow(task) {
  const cancel = ["submitted", "running"].includes(task.status)
    ? h("button", {
      type: "button", class: "secondary", "aria-label": `Cancel task ${task.description}`,
      onclick: async () => {
        try {
          await api(`/tasks/${task.task_id}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } });
          announce("Cancellation sent.");
        } catch (exc) {
          announce(exc.message);
        }
      },
    }, "Cancel")
    : "";
  return h("tr", { "data-task-id": task.task_id },
    h("td", { "data-label": "Task" }, h("a", { href: `/ui/tasks/${task.task_id}` }, task.description)),
    h("td", { "data-label": "Status" }, badge(task.status)),
    h("td", { "data-label": "Playbook" }, task.playbook || "—"),
    h("td", { "data-label": "Age" }, age(task.created_at)),
    h("td", {}, cancel));
}

function submitForm(onSubmitted) {
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "stack card", "aria-label": "Submit a task" },
    h("h2", {}, "Submit a task"),
    h("label", {}, "Description", h("textarea", { name: "description", rows: 2, required: true })),
    h("label", {}, "Playbook (optional)", h("input", { name: "playbook", placeholder: "research_report" })),
    h("label", {}, "Constraints (JSON, optional)", h("textarea", { name: "constraints", rows: 2 })),
    h("button", { type: "submit" }, "Submit"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    let constraints = null;
    try {
      const raw = String(data.get("constraints") || "").trim();
      constraints = raw ? JSON.parse(raw) : {};
    } catch {
      error.textContent = "Constraints must be a JSON object.";
      return;
    }
    const playbook = String(data.get("playbook") || "").trim();
    if (playbook) constraints.playbook = playbook;
    try {
      const accepted = await api("/tasks", {
        method: "POST",
        body: { description: String(data.get("description")), constraints: Object.keys(constraints).length ? constraints : null },
      });
      form.reset();
      announce(`Task submitted at ${accepted.position}.`);
      onSubmitted(accepted.position);
    } catch (exc) {
      error.textContent = exc.message;
    }
  });
  return form;
}

// -- one task ------------------------------------------------------------------------------
const STAGE_COLOURS = {
  pending: "#8a93a6", running: "#2453c9", recovering: "#9a6200", completed: "#1f7a45",
  failed: "#b3261e", skipped: "#5b6476",
};

// The plan as a graph: stages in columns by their depth in the dependencies, an arrow from
// each dependency, each stage coloured by its status.
function planGraph(stages) {
  const NS = "http://www.w3.org/2000/svg";
  const depth = {};
  const byId = Object.fromEntries(stages.map((s) => [s.id, s]));
  const depthOf = (id, seen = new Set()) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const deps = (byId[id]?.depends_on || []).filter((d) => byId[d]);
    depth[id] = deps.length ? 1 + Math.max(...deps.map((d) => depthOf(d, seen))) : 0;
    return depth[id];
  };
  stages.forEach((s) => depthOf(s.id));
  const columns = {};
  for (const s of stages) (columns[depth[s.id]] ??= []).push(s);
  const W = 170, H = 54, GX = 50, GY = 18;
  const at = {};
  for (const [col, list] of Object.entries(columns)) {
    list.forEach((s, row) => { at[s.id] = { x: 10 + col * (W + GX), y: 10 + row * (H + GY) }; });
  }
  const width = 20 + (Math.max(...Object.keys(columns).map(Number)) + 1) * (W + GX) - GX;
  const height = 20 + Math.max(...Object.values(columns).map((l) => l.length)) * (H + GY) - GY;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("class", "plan");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "The plan: " + stages.map((s) => `${s.id} ${s.status}`).join(", "));
  const el = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const s of stages) {
    for (const d of s.depends_on.filter((x) => at[x])) {
      el("line", { x1: at[d].x + W, y1: at[d].y + H / 2, x2: at[s.id].x, y2: at[s.id].y + H / 2, class: "edge" });
    }
  }
  for (const s of stages) {
    const { x, y } = at[s.id];
    const colour = STAGE_COLOURS[s.status] || STAGE_COLOURS.pending;
    el("rect", { x, y, width: W, height: H, rx: 6, fill: "#fff", stroke: colour, "stroke-width": 3, "data-stage": s.id, "data-status": s.status });
    el("text", { x: x + 10, y: y + 22, class: "stage-name" }, s.id);
    el("text", { x: x + 10, y: y + 42, fill: colour, class: "stage-status" }, `${s.status} · ${s.tools[0]}`);
  }
  return svg;
}

async function taskView(taskId) {
  const body = h("div");
  const error = h("p", { class: "error", role: "alert" });
  show(h("p", {}, h("a", { href: "/ui/tasks" }, "← All tasks")), error, body);
  const load = async (position) => {
    const wait = position ? `?wait_for=${encodeURIComponent(position)}` : "";
    try {
      const task = await api(`/tasks/${taskId}${wait}`);
      error.textContent = "";
      body.replaceChildren(...taskSections(task));
    } catch (exc) {
      // A task submitted a moment ago may not be projected yet: its stream's first event
      // loads it again, waiting for the projector.
      error.textContent = exc.status === 404 ? "No such task in your tenant (yet)." : exc.message;
      body.replaceChildren();
    }
  };
  await load();
  // The task's stream sends its history, then its live events: each read waits for the
  // projector to hold the last event seen, so the page never shows less than the stream.
  leave = liveStream(`/ws/tasks/${taskId}`, onceAfter(load), { resumable: true });
}

function taskSections(task) {
  const sections = [
    h("h1", {}, task.description),
    h("p", {}, badge(task.status), " ", task.playbook ? `playbook ${task.playbook}` : ""),
  ];
  if (task.plan) {
    sections.push(h("h2", {}, "Plan"), h("div", { class: "card graph" }, planGraph(task.plan.stages)));
  } else {
    sections.push(h("p", {}, "Not planned yet."));
  }
  sections.push(h("h2", {}, "Steps"), h("table", { "aria-label": "Steps" },
    h("thead", {}, h("tr", {}, ["Stage", "Status", "Attempts", "Tool", "Model", "Error"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, task.steps.map((s) => h("tr", { "data-stage": s.stage_id },
      h("td", { "data-label": "Stage" }, s.stage_id),
      h("td", { "data-label": "Status" }, badge(s.status)),
      h("td", { "data-label": "Attempts" }, String(s.attempts)),
      h("td", { "data-label": "Tool" }, s.tool || "—"),
      h("td", { "data-label": "Model" }, s.model || "—"),
      h("td", { "data-label": "Error" }, s.error ? `${s.error.code}: ${s.error.message}` : "—"))))));
  if (task.progress) {
    const p = task.progress;
    sections.push(h("h2", {}, "Progress"), h("p", {},
      `${p.stages_done} of ${p.stages_total} stages, ${p.elapsed_s.toFixed(1)} s of ${p.estimated_s.toFixed(1)} s estimated, ${p.tokens} tokens, $${p.cost_usd.toFixed(4)}`));
  }
  return sections;
}

route();
