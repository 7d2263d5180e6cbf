// One task: its plan as a graph, its steps and progress, followed on its own stream.
import { api, badge, h, liveStream, onLeave, onceAfter, show } from "../core.js";

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

export async function taskView(taskId) {
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
  onLeave(liveStream(`/ws/tasks/${taskId}`, onceAfter(load), { resumable: true }));
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
