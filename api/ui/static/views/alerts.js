// The tenant's alerts: filtered by status, a page at a time, each acknowledged with a note,
// followed live. The platform's admin may switch to the platform's own alerts.
import { announce, api, badge, credential, go, h, liveEvents, onLeave, onceAfter, show } from "../core.js";

const PAGE = 25;
const STATUSES = { open: "open", cleared: "cleared", all: "all" };
// The platform's alerts are tenant _system's, which no stream of the caller carries: read
// them again this often instead.
const PLATFORM_REFRESH_MS = 15000;

export default async function alertsView() {
  const params = new URLSearchParams(location.search);
  const status = STATUSES[params.get("status")] || "open";
  const isAdmin = (credential()?.scopes || []).includes("tenants:admin");
  const platform = isAdmin && params.get("platform") === "true";
  // One task's alerts only (the tasks list links here with ?task_id=).
  const taskId = /^[0-9a-f-]{36}$/.test(params.get("task_id") || "") ? params.get("task_id") : null;

  // Two messages: a read that failed (cleared by the next read that works), and an
  // acknowledgement refused (cleared by the next attempt).
  const error = h("p", { class: "error", role: "alert" });
  const refused = h("p", { class: "error", role: "alert" });
  const rows = h("tbody");
  const table = h("table", { class: "alerts", "aria-label": platform ? "Platform alerts" : "Alerts" },
    h("thead", {}, h("tr", {},
      ["Level", "Alert", "Task", "Raised", "Status", "Acknowledged"].map((c) => h("th", { scope: "col" }, c)),
      h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    rows);
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const counter = h("p", { class: "muted" });

  // What the list holds: how many alerts are shown (a live reload keeps that many) and the
  // cursor to the next page.
  let current = [];
  let wanted = PAGE;
  let cursor = null;
  let generation = 0;
  let focusAfter = null; // an alert acknowledged from this page, whose row takes the focus

  const query = (extra) => {
    const q = new URLSearchParams();
    if (status !== "all") q.set("status", status);
    if (platform) q.set("platform", "true");
    if (taskId) q.set("task_id", taskId);
    for (const [name, value] of Object.entries(extra)) if (value) q.set(name, String(value));
    return q;
  };

  const fetchAlerts = async (count, position) => {
    const alerts = [];
    let next = null;
    do {
      const limit = Math.min(200, Math.max(PAGE, count - alerts.length));
      const page = await api(`/alerts?${query({ limit, cursor: next, wait_for: alerts.length ? null : position })}`);
      alerts.push(...page.alerts);
      next = page.next_cursor;
    } while (next && alerts.length < count);
    return { alerts, next };
  };

  const context = {
    platform,
    reload: (position, focusId) => load(position, focusId),
    refuse: (message) => { refused.textContent = message; },
  };

  const load = async (position, focusId) => {
    const mine = ++generation;
    if (focusId) focusAfter = focusId;
    try {
      const { alerts, next } = await fetchAlerts(wanted, position);
      if (mine !== generation) return; // a newer read started after this one
      error.textContent = "";
      render(rows, alerts, context);
      current = alerts;
      cursor = next;
      setFooter(alerts.length);
      // Whichever read shows the acknowledgement first (this one, or a live one) moves the
      // focus from the form that is gone to what it became.
      if (alerts.some((a) => a.alert_id === focusAfter && a.acknowledged)) {
        rows.querySelector(`tr[data-alert-id="${CSS.escape(focusAfter)}"] .acked`)?.focus();
        focusAfter = null;
      }
    } catch (exc) {
      if (mine === generation) error.textContent = exc.message;
    }
  };

  const setFooter = (count) => {
    more.hidden = !cursor;
    counter.textContent = count
      ? `${count} alert${count === 1 ? "" : "s"} shown${cursor ? ", more to load" : ""}.`
      : "";
  };

  more.addEventListener("click", async () => {
    const mine = ++generation;
    try {
      const page = await api(`/alerts?${query({ limit: PAGE, cursor })}`);
      if (mine !== generation) return;
      const seen = new Set(current.map((a) => a.alert_id));
      const alerts = [...current, ...page.alerts.filter((a) => !seen.has(a.alert_id))];
      render(rows, alerts, context);
      current = alerts;
      cursor = page.next_cursor;
      wanted = alerts.length;
      setFooter(alerts.length);
      announce(`${page.alerts.length} more alert${page.alerts.length === 1 ? "" : "s"} shown.`);
    } catch (exc) {
      error.textContent = exc.message;
    }
  });

  show(
    h("h1", {}, platform ? "Platform alerts" : "Alerts"),
    taskId
      ? h("p", {}, "Alerts of task ", h("a", { href: `/ui/tasks/${taskId}` }, taskId), " only · ",
        h("a", { href: "/ui/alerts" }, "every alert"))
      : null,
    filterForm(status, isAdmin, platform),
    error, refused, table, h("div", { class: "pager" }, counter, more));
  // Only the alert events matter here; each burst reads the list once, waiting for its last.
  onLeave(liveEvents(onceAfter(load), "?types=alert.raised,alert.cleared,alert.acknowledged"));
  if (platform) {
    const timer = setInterval(() => load(), PLATFORM_REFRESH_MS);
    onLeave(() => clearInterval(timer));
  }
  await load();
}

function filterForm(status, isAdmin, platform) {
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter alerts" },
    h("label", {}, "Status", h("select", { name: "status" },
      Object.keys(STATUSES).map((s) => h("option", { value: s, selected: s === status }, s)))),
    isAdmin
      ? h("label", { class: "check" },
        h("input", { type: "checkbox", name: "platform", value: "true", checked: platform }),
        "Platform alerts")
      : null,
    h("button", { type: "submit", class: "secondary" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const query = new URLSearchParams();
    if (data.get("status") !== "open") query.set("status", String(data.get("status")));
    if (data.get("platform")) query.set("platform", "true");
    const taskId = new URLSearchParams(location.search).get("task_id");
    if (taskId) query.set("task_id", taskId);
    go(`/ui/alerts${query.toString() ? `?${query}` : ""}`);
  });
  return form;
}

// Puts the alerts in the table, keeping each row whose alert has not changed as it is (and
// an acknowledgement being written, with its focus), so a live update never takes away
// what someone is typing.
function render(rows, alerts, context) {
  const focused = document.activeElement;
  const before = new Map([...rows.querySelectorAll("tr[data-alert-id]")].map((tr) => [tr.dataset.alertId, tr]));
  const wantedIds = new Set(alerts.map((a) => a.alert_id));
  for (const child of [...rows.children]) if (!wantedIds.has(child.dataset.alertId)) child.remove();
  const next = alerts.map((alert) => {
    const old = before.get(alert.alert_id);
    const signature = JSON.stringify(alert);
    if (old && old.dataset.signature === signature) return old;
    const row = alertRow(alert, context);
    row.dataset.signature = signature;
    const open = old?.querySelector("form.ack:not([hidden])");
    if (open && !alert.acknowledged) row.querySelector(".actions").replaceChildren(...old.querySelector(".actions").childNodes);
    old?.remove();
    return row;
  });
  // Kept rows are already in order (newest first); only new rows are inserted between them.
  let at = rows.firstChild;
  for (const row of next) {
    if (row === at) at = at.nextSibling;
    else rows.insertBefore(row, at);
  }
  if (!alerts.length) {
    rows.append(h("tr", {}, h("td", { colspan: 7 }, "No alerts here.")));
  }
  if (focused instanceof HTMLElement && focused.isConnected && focused !== document.activeElement) focused.focus();
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return h("time", { datetime: iso }, date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }));
}

let formCount = 0;

function alertRow(alert, context) {
  const row = h("tr", { "data-alert-id": alert.alert_id, "data-status": alert.status },
    h("td", { "data-label": "Level" }, badge(alert.level)),
    h("td", { "data-label": "Alert" }, h("strong", { class: "code" }, alert.code), h("br"), alert.message),
    h("td", { "data-label": "Task" }, alert.task_id
      ? h("a", { href: `/ui/tasks/${alert.task_id}`, "aria-label": `Task ${alert.task_id}` }, `${alert.task_id.slice(0, 8)}…`)
      : "platform"),
    h("td", { "data-label": "Raised" }, when(alert.raised_at)),
    h("td", { "data-label": "Status" }, badge(alert.status), alert.status === "cleared"
      ? [h("br"), when(alert.cleared_at), alert.clear_reason ? h("div", { class: "muted" }, alert.clear_reason) : null]
      : null),
    h("td", { "data-label": "Acknowledged", class: "acked", tabindex: -1 }, alert.acknowledged
      ? [h("span", {}, `Yes, by ${alert.acknowledged_by || "someone"}`), h("br"), when(alert.acknowledged_at),
        alert.note ? h("blockquote", { class: "note" }, alert.note) : null]
      : "No"),
    h("td", { class: "actions" }, alert.acknowledged ? null : acknowledgeControl(alert, context)));
  return row;
}

function acknowledgeControl(alert, context) {
  const id = `ack-${++formCount}`;
  const error = h("p", { class: "error", role: "alert" });
  const note = h("textarea", { name: "note", rows: 2, maxlength: 2000 });
  const form = h("form", { class: "ack stack", id, hidden: true, "aria-label": `Acknowledge ${alert.code}` },
    h("label", {}, "Note (optional)", note),
    h("div", { class: "buttons" },
      h("button", { type: "submit" }, "Send acknowledgement"),
      h("button", { type: "button", class: "secondary", onclick: () => reveal(false) }, "Cancel")),
    error);
  const toggle = h("button", {
    type: "button", class: "secondary", "aria-expanded": "false", "aria-controls": id,
    "aria-label": `Acknowledge ${alert.code}: ${alert.message}`,
    onclick: () => reveal(form.hidden),
  }, "Acknowledge");
  const reveal = (open) => {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    (open ? note : toggle).focus();
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    context.refuse("");
    const text = note.value.trim();
    const platform = context.platform ? "?platform=true" : "";
    try {
      const accepted = await api(`/alerts/${encodeURIComponent(alert.alert_id)}/ack${platform}`, {
        method: "POST", body: { note: text || null },
      });
      announce(`Alert ${alert.code} acknowledged.`);
      await context.reload(accepted.position, alert.alert_id);
    } catch (exc) {
      const message = exc.status === 403 ? `You may not acknowledge alerts: ${exc.message}` : exc.message;
      if (exc.status === 409) {
        // Acknowledged by someone else meanwhile: say so above the list, whose row now shows who.
        context.refuse(message);
        context.reload();
      } else {
        error.textContent = message;
      }
    }
  });
  return [toggle, form];
}
