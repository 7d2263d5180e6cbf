// The agents: each one's state, instances, tasks in flight, lag and last error, read from
// its own stream ({"action": "status"}), and the events it emits for the tenant, live.
import { h, liveStream, onLeave, show } from "../core.js";

const AGENTS = ["super-agent", "journey-agent", "inspector-agent", "cost-guard"];
const STATUS_EVERY_MS = 5000;
// After an event, the status is asked again once, this long after the first of a burst.
const STATUS_AFTER_EVENT_MS = 1000;
const RECENT = 20;
const STATES = {
  up: "an instance sent a heartbeat lately",
  stale: "instances were heard from, none lately",
  not_seen: "no heartbeat from this agent in the last day",
};

export default async function agentsView() {
  const cards = AGENTS.map(agentCard);
  show(
    h("h1", {}, "Agents"),
    h("p", { class: "muted" },
      "Each agent's workers as their heartbeats describe them (asked again every few seconds), and the events each agent emits for your tenant, live."),
    h("div", { class: "agents" }, cards.map((card) => card.node)));
  const timer = setInterval(() => cards.forEach((card) => card.ask()), STATUS_EVERY_MS);
  onLeave(() => clearInterval(timer));
  for (const card of cards) onLeave(card.stop);
}

function agentCard(agentId) {
  const headingId = `agent-${agentId}`;
  const state = h("span", { class: "badge status-unknown", "data-state": "unknown" }, "asking…");
  const blocks = {
    summary: h("p", { class: "summary" }),
    tasks: h("div"),
    lag: h("div"),
    error: h("div"),
    instances: h("div"),
  };
  const checked = h("p", { class: "muted checked" });
  const problem = h("p", { class: "error" });
  const events = h("ol", { class: "events", "aria-label": `Recent events of ${agentId}` });
  const noEvents = h("p", { class: "muted" }, "No event since this page opened.");
  // What only an agent that was heard from has: hidden for one never seen.
  const heard = h("div", { class: "heard" },
    h("h3", {}, "Tasks in flight"), blocks.tasks,
    h("h3", {}, "Lag"), blocks.lag,
    h("h3", {}, "Last error"), blocks.error,
    blocks.instances);
  const node = h("section", { class: "card agent", "aria-labelledby": headingId, "data-agent": agentId },
    h("h2", { id: headingId }, agentId, " ", state),
    blocks.summary, problem, heard,
    h("h3", {}, "Recent events"), noEvents, events,
    checked);

  let send = null;
  let soon = null;
  const ask = () => send?.({ action: "status" });

  const onEvent = (event) => {
    noEvents.hidden = true;
    events.prepend(eventItem(event));
    while (events.children.length > RECENT) events.lastChild.remove();
    soon ??= setTimeout(() => { soon = null; ask(); }, STATUS_AFTER_EVENT_MS);
  };
  const onControl = (message, reply) => {
    if (message.type === "live" || message.type === "authenticated") {
      send = reply;
      problem.textContent = "";
      ask();
    } else if (message.type === "status") {
      showStatus(message.status);
    } else if (message.type === "error") {
      problem.textContent = message.error?.message || "The stream refused a message.";
    }
  };

  const showStatus = (status) => {
    state.className = `badge status-${status.state}`;
    state.dataset.state = status.state;
    state.textContent = status.state.replace("_", " ");
    state.title = STATES[status.state] || "";
    heard.hidden = status.state === "not_seen";
    patch(blocks.summary, [status.state, status.instances_up, status.tasks_in_flight_count, status.lag_total], () => summary(status));
    patch(blocks.tasks, [status.tasks_in_flight, status.tasks_in_flight_count], () => tasksInFlight(status));
    patch(blocks.lag, status.lag, () => lagTable(agentId, status.lag));
    patch(blocks.error, status.last_error, () => lastError(status.last_error));
    patch(blocks.instances, status.instances.map((i) => [i.instance, i.state, i.started_at]), () => instances(status.instances));
    checked.replaceChildren("Status read at ", time(status.checked_at), ".");
  };

  const stop = liveStream(`/ws/agent/${agentId}`, onEvent, { onControl });
  return {
    node,
    ask,
    stop: () => {
      clearTimeout(soon);
      stop();
    },
  };
}

// Draws a block again only when what it shows changed, so a link someone is on keeps its
// focus while the status is read every few seconds.
function patch(node, value, draw) {
  const signature = JSON.stringify(value);
  if (node.dataset.signature === signature) return;
  node.dataset.signature = signature;
  node.replaceChildren(...[draw()].flat().filter((child) => child !== null && child !== undefined));
}

function time(iso) {
  return h("time", { datetime: iso }, new Date(iso).toLocaleTimeString());
}

function summary(status) {
  if (status.state === "not_seen") return `Not seen: ${STATES.not_seen}.`;
  if (status.state === "stale") return `Stale: ${STATES.stale}.`;
  const instancesUp = `${status.instances_up} instance${status.instances_up === 1 ? "" : "s"} up`;
  return `${instancesUp} · ${status.tasks_in_flight_count} task${status.tasks_in_flight_count === 1 ? "" : "s"} in flight · total lag ${status.lag_total}`;
}

function tasksInFlight(status) {
  if (!status.tasks_in_flight_count) return h("p", {}, "None.");
  const listed = status.tasks_in_flight.length;
  return [
    listed < status.tasks_in_flight_count
      ? h("p", {}, `${status.tasks_in_flight_count}, of which the first ${listed}:`)
      : null,
    h("ul", { class: "tasks-in-flight" }, status.tasks_in_flight.map((taskId) =>
      h("li", {}, h("a", { href: `/ui/tasks/${taskId}` }, taskId)))),
  ];
}

function lagTable(agentId, lag) {
  if (!lag.length) return h("p", {}, "No partition held by an instance that is up.");
  const number = (value) => (value === null || value === undefined ? "unknown" : String(value));
  return h("table", { class: "lag", "aria-label": `Lag of ${agentId} per partition` },
    h("thead", {}, h("tr", {}, ["Partition", "Committed", "End", "Lag"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, lag.map((entry) => h("tr", { "data-partition": entry.partition },
      h("td", { "data-label": "Partition" }, String(entry.partition)),
      h("td", { "data-label": "Committed" }, number(entry.committed)),
      h("td", { "data-label": "End" }, number(entry.high_watermark)),
      h("td", { "data-label": "Lag" }, number(entry.lag))))));
}

function lastError(error) {
  if (!error) return h("p", {}, "None.");
  return h("p", { class: "last-error" },
    h("strong", {}, error.code), " at ", time(error.at), ` on ${error.instance}`,
    error.message ? [": ", error.message] : null,
    error.task_id ? [" (task ", h("a", { href: `/ui/tasks/${error.task_id}` }, `${error.task_id.slice(0, 8)}…`), ")"] : null);
}

function instances(list) {
  if (!list.length) return [];
  return h("details", {},
    h("summary", {}, `Instances (${list.length})`),
    h("ul", {}, list.map((i) => h("li", {},
      `${i.instance}: ${i.state}, started `, time(i.started_at),
      `, heartbeat every ${i.interval_s} s, partitions ${i.partitions.join(", ") || "none"}`))));
}

function eventItem(event) {
  return h("li", { "data-type": event.type },
    h("strong", {}, event.type), " ",
    event.task_id ? [h("a", { href: `/ui/tasks/${event.task_id}` }, `task ${event.task_id.slice(0, 8)}…`), " "] : null,
    time(event.occurred_at));
}
