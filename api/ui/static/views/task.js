// One task: its plan as a graph, its steps, the InspectorAgent's evaluations, the
// SuperAgent's thoughts, its cost against the plan's estimate, its report, and its whole
// history with a time-travel slider. Followed on the task's own stream.
import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.js";
import { api, badge, credential, h, liveStream, onLeave, onceAfter, show } from "../core.js";

const NS = "http://www.w3.org/2000/svg";

function svgNode(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function may(scope) {
  return (credential()?.scopes || []).includes(scope);
}

const usd = (value) => `$${Number(value || 0).toFixed(4)}`;
const number = (value) => Number(value || 0).toLocaleString("en");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

// -- the plan ------------------------------------------------------------------------------
const STAGE_COLOURS = {
  pending: "#5b6476", running: "#2453c9", recovering: "#8a5700", completed: "#1f7a45",
  failed: "#b3261e", skipped: "#5b6476",
};

// The plan as a graph: stages in columns by their depth in the dependencies, an arrow from
// each dependency, each stage coloured by its status and named with it.
export function planGraph(stages) {
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
  const W = 210, H = 54, GX = 40, GY = 18;
  const at = {};
  for (const [col, list] of Object.entries(columns)) {
    list.forEach((s, row) => { at[s.id] = { x: 10 + col * (W + GX), y: 10 + row * (H + GY) }; });
  }
  const width = 20 + (Math.max(...Object.keys(columns).map(Number)) + 1) * (W + GX) - GX;
  const height = 20 + Math.max(...Object.values(columns).map((l) => l.length)) * (H + GY) - GY;
  const svg = svgNode("svg", {
    viewBox: `0 0 ${width} ${height}`, width, class: "plan", role: "img",
    "aria-label": "The plan: " + stages.map((s) => `${s.id} ${s.status}`).join(", "),
  });
  for (const s of stages) {
    for (const d of s.depends_on.filter((x) => at[x])) {
      svg.append(svgNode("line", {
        x1: at[d].x + W, y1: at[d].y + H / 2, x2: at[s.id].x, y2: at[s.id].y + H / 2, class: "edge",
      }));
    }
  }
  for (const s of stages) {
    const { x, y } = at[s.id];
    const colour = STAGE_COLOURS[s.status] || STAGE_COLOURS.pending;
    svg.append(
      svgNode("rect", {
        x, y, width: W, height: H, rx: 6, fill: "#fff", stroke: colour, "stroke-width": 3,
        "data-stage": s.id, "data-status": s.status,
      }),
      svgNode("text", { x: x + 10, y: y + 22, class: "stage-name" }, s.id),
      svgNode("text", { x: x + 10, y: y + 42, fill: colour, class: "stage-status" }, `${s.status} · ${s.tools[0]}`),
    );
  }
  return svg;
}

function planSection(plan) {
  if (!plan) return [h("h2", {}, "Plan"), h("p", {}, "Not planned yet.")];
  return [h("h2", {}, "Plan"), h("div", { class: "card graph task-plan" }, planGraph(plan.stages))];
}

function stepsSection(steps) {
  const current = steps.find((s) => s.status === "running" || s.status === "recovering");
  return [
    h("h2", {}, "Steps"),
    current
      ? h("p", { class: "current-step" }, `Now: ${current.stage_id}, attempt ${current.attempts}, with ${current.tool || "—"}`)
      : null,
    h("table", { "aria-label": "Steps" },
      h("thead", {}, h("tr", {}, ["Stage", "Status", "Attempts", "Tool", "Model", "Error"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, steps.map((s) => h("tr", { "data-stage": s.stage_id, "aria-current": s === current ? "step" : null },
        h("td", { "data-label": "Stage" }, s.stage_id),
        h("td", { "data-label": "Status" }, badge(s.status)),
        h("td", { "data-label": "Attempts" }, String(s.attempts)),
        h("td", { "data-label": "Tool" }, s.tool || "—"),
        h("td", { "data-label": "Model" }, s.model || "—"),
        h("td", { "data-label": "Error" }, s.error ? `${s.error.code}: ${s.error.message}` : "—"))))),
  ];
}

// -- evaluations ---------------------------------------------------------------------------
// A score and its 90% interval on a 0–1 axis, with the threshold it was judged against.
function intervalChart(evaluation) {
  const W = 320, H = 46, L = 10, R = 10;
  const x = (v) => L + Math.min(1, Math.max(0, v)) * (W - L - R);
  const [low, high] = evaluation.interval;
  const label = `Score ${evaluation.quality_score.toFixed(2)}, 90% interval ${low.toFixed(2)} to ${high.toFixed(2)}, threshold ${evaluation.threshold.toFixed(2)}`;
  const svg = svgNode("svg", { viewBox: `0 0 ${W} ${H}`, width: W, class: "interval", role: "img", "aria-label": label });
  svg.append(
    svgNode("line", { x1: x(0), y1: 30, x2: x(1), y2: 30, class: "axis" }),
    ...[0, 0.5, 1].map((t) => svgNode("text", { x: x(t), y: 44, class: "tick" }, String(t))),
    svgNode("line", { x1: x(evaluation.threshold), y1: 8, x2: x(evaluation.threshold), y2: 34, class: "threshold" }),
    svgNode("line", { x1: x(low), y1: 20, x2: x(high), y2: 20, class: "band", "data-low": low, "data-high": high }),
    svgNode("circle", { cx: x(evaluation.quality_score), cy: 20, r: 5, class: "mean", "data-score": evaluation.quality_score }));
  return svg;
}

function evaluationsSection(evaluations, opened) {
  if (!evaluations.length) return [h("h2", {}, "Evaluations"), h("p", {}, "No evaluation yet.")];
  return [
    h("h2", {}, "Evaluations"),
    h("div", { class: "evaluations" }, evaluations.map((e) => {
      const key = `${e.stage_id}:${e.attempt}`;
      const failed = e.checks.filter((c) => !c.passed);
      const details = h("details", { class: "card evaluation", "data-evaluation": key, open: opened.has(key) },
        h("summary", {},
          `${e.stage_id}, attempt ${e.attempt}: `, h("strong", {}, e.decision),
          ` · score ${e.quality_score.toFixed(2)} (90%: ${e.interval[0].toFixed(2)}–${e.interval[1].toFixed(2)})`),
        intervalChart(e),
        h("p", {}, e.reason),
        h("p", { class: "muted" }, `Judged ${e.role} with ${e.tool}${e.model ? ` (${e.model})` : ""} against a threshold of ${e.threshold.toFixed(2)}; confidence ${e.confidence.toFixed(2)}; prior Beta(${e.prior.alpha.toFixed(1)}, ${e.prior.beta.toFixed(1)}) from ${e.prior.source}.`),
        h("h3", {}, failed.length ? `Checks that failed (${failed.length} of ${e.checks.length})` : `All ${e.checks.length} checks passed`),
        h("ul", { class: "checks" }, [...failed, ...e.checks.filter((c) => c.passed)].map((c) =>
          h("li", { class: c.passed ? "passed" : "failed" }, h("strong", {}, c.passed ? "passed" : "failed"), ` ${c.name}: ${c.detail}`))),
        e.suggestions.length
          ? [h("h3", {}, e.decision === "retry" ? "Suggestions carried into the retry" : "Suggestions"),
            h("ul", { class: "suggestions" }, e.suggestions.map((s) => h("li", {}, s)))]
          : null);
      details.addEventListener("toggle", () => (details.open ? opened.add(key) : opened.delete(key)));
      return details;
    })),
  ];
}

// -- thoughts, cost and output -------------------------------------------------------------
function thoughtsSection(thoughts) {
  if (!thoughts.length) return [];
  return [
    h("h2", {}, "Thoughts"),
    h("ol", { class: "thoughts card" }, thoughts.map((t) => h("li", { "data-position": t.position },
      h("span", { class: "muted" }, `${t.operation} #${t.number}${t.stage_id ? ` · ${t.stage_id}` : ""}${t.revises ? ` · revises ${t.revises}` : ""}${t.branch ? ` · branch ${t.branch}` : ""}`),
      h("p", {}, t.text)))),
  ];
}

function burn(actual, estimated, label) {
  const ratio = estimated > 0 ? actual / estimated : 0;
  return h("div", { class: "burn" },
    h("span", {}, label),
    h("meter", { min: 0, max: Math.max(1, ratio), low: 0.8, high: 1, optimum: 0.5, value: ratio, "aria-label": `${label}: ${Math.round(ratio * 100)}% of the estimate` }),
    h("span", {}, estimated > 0 ? `${Math.round(ratio * 100)}% of the estimate` : "no estimate"));
}

function costSection(cost, progress) {
  if (!cost) {
    if (!progress) return [];
    return [h("h2", {}, "Cost"), h("p", {}, `${number(progress.tokens)} tokens, ${usd(progress.cost_usd)} so far.`)];
  }
  return [
    h("h2", {}, "Cost"),
    h("div", { class: "card cost" },
      h("p", {}, `So far ${number(cost.actual.tokens)} tokens and ${usd(cost.actual.cost_usd)}, against an estimate of ${number(cost.estimated.tokens)} tokens and ${usd(cost.estimated.cost_usd)}${cost.planning.tokens ? ` (planning: ${number(cost.planning.tokens)} tokens, ${usd(cost.planning.cost_usd)})` : ""}.`),
      burn(cost.actual.tokens, cost.estimated.tokens, "Tokens"),
      burn(cost.actual.cost_usd, cost.estimated.cost_usd, "Dollars"),
      h("table", { "aria-label": "Cost per stage" },
        h("thead", {}, h("tr", {}, ["Stage", "Estimated tokens", "Tokens", "Estimated", "Spent"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, cost.stages.map((s) => h("tr", { "data-stage": s.stage_id },
          h("td", { "data-label": "Stage" }, s.stage_id),
          h("td", { "data-label": "Estimated tokens" }, number(s.estimated.tokens)),
          h("td", { "data-label": "Tokens" }, number(s.actual.tokens)),
          h("td", { "data-label": "Estimated" }, usd(s.estimated.cost_usd)),
          h("td", { "data-label": "Spent" }, usd(s.actual.cost_usd))))))),
  ];
}

// The report: the final output's markdown, made HTML by marked and stripped by DOMPurify of
// anything that could run before it enters the page. Any other output is shown as JSON.
function outputSection(task) {
  if (task.output === null || task.output === undefined) {
    return task.summary ? [h("h2", {}, "Output"), h("p", {}, task.summary)] : [];
  }
  if (typeof task.output !== "object" || task.output.shredded) {
    return [h("h2", {}, "Output"), h("p", {}, "The output was shredded.")];
  }
  const final = task.output.final;
  const markdown = typeof final === "string" ? final : final?.markdown;
  const report = h("div", { class: "card report" });
  if (typeof markdown === "string") {
    report.innerHTML = DOMPurify.sanitize(marked.parse(markdown), { USE_PROFILES: { html: true } });
    // An image the report names without alternative text is described by its address.
    for (const image of report.querySelectorAll("img:not([alt])")) {
      image.alt = `image: ${image.getAttribute("src") || "no address"}`;
    }
  } else {
    report.append(h("pre", {}, JSON.stringify(final, null, 2)));
  }
  return [
    h("h2", {}, "Output"),
    task.summary ? h("p", {}, task.summary) : null,
    report,
    h("details", { class: "raw" }, h("summary", {}, "Every stage's output (JSON)"),
      h("pre", {}, JSON.stringify(task.output, null, 2))),
  ];
}

// -- history and time travel ---------------------------------------------------------------
// The task's events with their positions, and a slider over them: moving it reads the
// task's state as of that event from the audit endpoint. At the last event it follows the
// task live; anywhere else it stays where it was put.
function historySection(taskId) {
  const slider = h("input", { type: "range", min: 1, max: 1, value: 1, step: 1, id: "as-of", disabled: true });
  const label = h("label", { for: "as-of" }, "Show the task as of event");
  const readout = h("output", { for: "as-of", class: "as-of" });
  const state = h("div", { class: "as-of-state", "aria-live": "polite" });
  const rows = h("tbody");
  const note = h("p", { class: "muted" });
  let events = [];
  let pending = null;
  let asked = 0;

  const showRow = () => {
    for (const row of rows.children) {
      if (Number(row.dataset.index) === Number(slider.value)) row.setAttribute("aria-current", "true");
      else row.removeAttribute("aria-current");
    }
  };
  const readState = async () => {
    const event = events[Number(slider.value) - 1];
    if (!event) return;
    readout.textContent = `event ${slider.value} of ${events.length}: ${event.type} at ${event.position}`;
    showRow();
    if (!may("audit:read")) return;
    const ask = ++asked;
    try {
      const found = await api(`/audit/tasks/${taskId}/state?as_of=${encodeURIComponent(event.position)}`);
      if (ask !== asked) return;
      state.replaceChildren(...asOfState(found).filter(Boolean));
    } catch (exc) {
      if (ask === asked) state.replaceChildren(h("p", { class: "error", role: "alert" }, exc.message));
    }
  };
  slider.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(readState, 150);
  });

  const update = (history) => {
    const following = Number(slider.value) >= events.length;
    events = history;
    slider.max = String(Math.max(1, events.length));
    slider.disabled = events.length === 0;
    rows.replaceChildren(...events.map((e, i) => h("tr", { "data-index": i + 1, "data-position": e.position },
      h("td", { "data-label": "#" }, String(i + 1)),
      h("td", { "data-label": "Position" }, h("code", {}, e.position)),
      h("td", { "data-label": "Event" }, e.type),
      h("td", { "data-label": "By" }, `${e.actor.kind} ${e.actor.id}`),
      h("td", { "data-label": "At" }, when(e.occurred_at)))));
    if (following) {
      slider.value = String(events.length);
      readState();
    } else {
      showRow();
    }
  };
  note.textContent = may("audit:read")
    ? "Move the slider (or use the arrow keys on it) to see the task as it stood after any of its events."
    : "Your credential has no audit:read scope, so the slider shows positions but not the state as of them.";
  const section = [
    h("h2", {}, "History"),
    h("div", { class: "card time-travel" }, note, h("div", { class: "slider" }, label, slider, readout), state),
    h("table", { "aria-label": "History" },
      h("thead", {}, h("tr", {}, ["#", "Position", "Event", "By", "At"].map((c) => h("th", { scope: "col" }, c)))),
      rows),
  ];
  return { section, update };
}

function asOfState(found) {
  const { task, as_of: asOf, usage } = found;
  return [
    h("h3", {}, `As of ${asOf.type} at ${asOf.position} (${when(asOf.occurred_at)}), after ${asOf.events} events`),
    h("p", { "data-as-of-status": task.status }, "Status then: ", badge(task.status),
      ` · ${task.plan ? `${task.plan.stages.filter((s) => s.status === "completed").length} of ${task.plan.stages.length} stages completed` : "not planned yet"}`,
      ` · ${number(usage.tokens)} tokens, ${usd(usage.cost_usd)}`,
      ` · ${found.evaluations.length} evaluations`),
    task.plan ? h("div", { class: "graph" }, planGraph(task.plan.stages)) : null,
  ];
}

// -- the page ------------------------------------------------------------------------------
export async function taskView(taskId) {
  const head = h("div");
  const body = h("div");
  const error = h("p", { class: "error", role: "alert" });
  const history = historySection(taskId);
  const historyBox = h("section", { "aria-label": "History", hidden: true }, history.section);
  const opened = new Set();
  show(h("p", {}, h("a", { href: "/ui/tasks" }, "← All tasks")), error, head, body, historyBox);

  const optional = async (path, scope) => {
    if (scope && !may(scope)) return null;
    try {
      return await api(path);
    } catch {
      return null;
    }
  };
  const load = async (position) => {
    const wait = position ? `?wait_for=${encodeURIComponent(position)}` : "";
    let task;
    try {
      task = await api(`/tasks/${taskId}${wait}`);
    } catch (exc) {
      // A task submitted a moment ago may not be projected yet: its stream's first event
      // loads it again, waiting for the projector.
      error.textContent = exc.status === 404 ? "No such task in your tenant (yet)." : exc.message;
      head.replaceChildren();
      body.replaceChildren();
      historyBox.hidden = true;
      return;
    }
    const [evaluations, thoughts, cost, events] = await Promise.all([
      optional(`/tasks/${taskId}/evaluations`),
      optional(`/tasks/${taskId}/thoughts`),
      optional(`/tasks/${taskId}/cost`, "usage:read"),
      optional(`/tasks/${taskId}/events`),
    ]);
    error.textContent = "";
    head.replaceChildren(
      h("h1", {}, task.description),
      h("p", {}, badge(task.status), " ", task.playbook ? `playbook ${task.playbook}` : "",
        task.progress ? ` · ${task.progress.stages_done} of ${task.progress.stages_total} stages, ${task.progress.elapsed_s.toFixed(1)} s of ${task.progress.estimated_s.toFixed(1)} s estimated` : ""));
    body.replaceChildren(...[
      ...planSection(task.plan),
      ...stepsSection(task.steps),
      ...evaluationsSection(evaluations?.evaluations || [], opened),
      ...thoughtsSection(thoughts?.thoughts || []),
      ...costSection(cost, task.progress),
      ...outputSection(task),
    ].filter(Boolean));
    historyBox.hidden = !events;
    if (events) history.update(events.events);
  };
  await load();
  // The task's stream sends its history, then its live events: each read waits for the
  // projector to hold the last event seen, so the page never shows less than the stream.
  onLeave(liveStream(`/ws/tasks/${taskId}`, onceAfter(load), { resumable: true }));
}
