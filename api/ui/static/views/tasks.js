// The tasks list: search and filter, submit, cancel, followed live.
import { age, announce, api, badge, credential, go, h, liveEvents, onLeave, onceAfter, show } from "../core.js";

export async function tasksView() {
  const params = new URLSearchParams(location.search);
  const rows = h("tbody");
  const table = h("table", { "aria-label": "Tasks" },
    h("thead", {}, h("tr", {}, ["Task", "Status", "Playbook", "Age", "Cost", "Open alerts", ""].map((c) => h("th", { scope: "col" }, c)))),
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
      const [page, costs, alerts] = await Promise.all([
        api(`/tasks?${query}`), costsByTask(), openAlertsByTask(position)]);
      rows.replaceChildren(...page.tasks.map((task) => taskRow(task, costs, alerts)));
      if (!page.tasks.length) rows.append(h("tr", {}, h("td", { colspan: 7 }, "No task yet.")));
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  show(h("h1", {}, "Tasks"), submitForm(load), filters, error, table);
  await load();
  onLeave(liveEvents(onceAfter(load)));
}

// What each task has cost (the usage report by task) and how many alerts each has open,
// when the credential may read them; an empty map otherwise.
async function costsByTask() {
  if (!(credential()?.scopes || []).includes("usage:read")) return null;
  try {
    const report = await api("/usage?group_by=task");
    return new Map(report.groups.map((g) => [g.key, g]));
  } catch {
    return null;
  }
}

async function openAlertsByTask(position) {
  if (!(credential()?.scopes || []).includes("alerts:read")) return null;
  const query = new URLSearchParams({ status: "open", limit: "200" });
  if (position) query.set("wait_for", position);
  try {
    const page = await api(`/alerts?${query}`);
    const counts = new Map();
    for (const alert of page.alerts) counts.set(alert.task_id, (counts.get(alert.task_id) || 0) + 1);
    return counts;
  } catch {
    return null;
  }
}

function taskRow(task, costs, alerts) {
  const spent = costs?.get(task.task_id);
  const open = alerts?.get(task.task_id) || 0;
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
    h("td", { "data-label": "Cost" }, costs ? (spent ? `$${spent.cost_usd.toFixed(4)} · ${spent.total_tokens} tokens` : "$0") : "—"),
    h("td", { "data-label": "Open alerts", class: open ? "alerts-open" : "" },
      alerts ? (open ? h("a", { href: `/ui/alerts?task_id=${task.task_id}` }, `${open} open`) : "none") : "—"),
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
