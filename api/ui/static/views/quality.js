// Quality: the last fit of the hierarchical quality model and whether it converged, then each
// (role, tool, model) group's posterior mean and 90% interval on a shared 0–1 axis.
import { age, api, credential, h, liveEvents, onLeave, onceAfter, show } from "../core.js";

const NS = "http://www.w3.org/2000/svg";
// Fits are the platform's events, not the tenant's: the tenant's stream never carries them,
// so the page also reads again once a minute while it is in view.
const REFRESH_MS = 60_000;
const TICKS = [0, 0.25, 0.5, 0.75, 1];
const AXIS = { width: 240, left: 10, right: 230 };

export default async function qualityView() {
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div", { class: "quality" });
  show(h("h1", {}, "Quality"), error, body);

  let shown = null;
  const load = async (position) => {
    const wait = position ? `?wait_for=${encodeURIComponent(position)}` : "";
    try {
      const insights = await api(`/insights/quality${wait}`);
      error.textContent = "";
      const key = JSON.stringify(insights);
      if (key === shown) return;  // nothing new: the page stays as it is
      shown = key;
      body.replaceChildren(...qualitySections(insights));
    } catch (exc) {
      shown = null;
      error.textContent = exc.status === 403
        ? "This credential cannot read quality insights: it needs the insights:read scope."
        : exc.message;
      body.replaceChildren();
    }
  };
  await load();
  const scopes = credential()?.scopes;
  if (!scopes || scopes.includes("tasks:read")) {
    onLeave(liveEvents(onceAfter(load), "?types=evaluation.recorded,quality.fitted"));
  }
  const timer = setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
  onLeave(() => clearInterval(timer));
}

function qualitySections({ groups, last_fit: fit }) {
  if (!fit && !groups.length) {
    return [h("section", { class: "card empty", "aria-labelledby": "quality-empty" },
      h("h2", { id: "quality-empty" }, "No quality fit yet"),
      h("p", {}, "The quality model is fitted on the evaluations of completed stages. Once it has ",
        "been fitted, each role, tool and model your tasks used appears here with its quality."))];
  }
  const sections = [];
  if (fit) sections.push(fitSection(fit));
  sections.push(h("h2", {}, "Groups"));
  if (!groups.length) {
    sections.push(h("p", { class: "empty" }, "None of your evaluations is in a converged fit yet."));
    return sections;
  }
  sections.push(
    h("p", { class: "quality-help" },
      "Each group's posterior mean (dot) and central 90% credible interval (line) on a scale ",
      "from 0 to 1, from the newest converged fit that had the group. Evaluations are your own."),
    groupsTable(groups));
  return sections;
}

function fitSection(fit) {
  const verdict = fit.converged
    ? h("p", { class: "quality-verdict converged" }, h("strong", {}, "Converged."),
      " The last fit's posteriors are in use.")
    : h("p", { class: "quality-verdict not-converged" }, h("strong", {}, "Did not converge."),
      " The last fit is not used: each group below comes from the newest fit that converged.");
  const facts = [
    ["Reason", fit.reason || (fit.converged ? "R-hat and effective sample size within bounds" : "—")],
    ["R-hat max", fit.r_hat_max.toFixed(3)],
    ["ESS min", Math.round(fit.ess_min).toLocaleString("en-US")],
    ["Evaluations", fit.evaluations.toLocaleString("en-US")],
    ["Groups", String(fit.groups)],
    ["Fitted", `${when(fit.fitted_at)} (${age(fit.fitted_at)} ago), in ${fit.seconds.toFixed(1)} s`],
    ["Fit", fit.fit_id],
  ];
  return h("section", { class: "card quality-fit", "aria-labelledby": "last-fit", "data-converged": String(fit.converged) },
    h("h2", { id: "last-fit" }, "Last fit"), verdict,
    h("dl", { class: "quality-facts" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))));
}

function groupsTable(groups) {
  const sorted = [...groups].sort((a, b) =>
    a.role.localeCompare(b.role) || b.mean - a.mean || a.tool.localeCompare(b.tool)
    || (a.model || "").localeCompare(b.model || ""));
  const header = ["Role", "Tool", "Model", "Mean", "90% interval"].map((c) => h("th", { scope: "col" }, c));
  header.push(h("th", { scope: "col", class: "quality-axis-head" },
    h("span", { class: "sr-only" }, "Drawn on a scale from 0 to 1"), axisLabels()));
  header.push(...["Evaluations", "R-hat", "ESS", "Fit"].map((c) => h("th", { scope: "col" }, c)));
  return h("table", { class: "quality-groups", "aria-label": "Quality per role, tool and model" },
    h("thead", {}, h("tr", {}, header)),
    h("tbody", {}, sorted.map(groupRow)));
}

function groupRow(g) {
  const [low, high] = g.interval;
  return h("tr", { "data-role": g.role, "data-tool": g.tool, "data-model": g.model ?? "" },
    h("td", { "data-label": "Role" }, g.role),
    h("td", { "data-label": "Tool" }, g.tool),
    h("td", { "data-label": "Model" }, g.model || "any"),
    h("td", { "data-label": "Mean", class: "quality-mean-text" }, g.mean.toFixed(3)),
    h("td", { "data-label": "90% interval" }, `${low.toFixed(3)} – ${high.toFixed(3)}`),
    h("td", { "data-label": "On a 0–1 scale", class: "quality-drawn" }, intervalSvg(g)),
    h("td", { "data-label": "Evaluations" }, g.evaluations.toLocaleString("en-US")),
    h("td", { "data-label": "R-hat" }, g.r_hat.toFixed(3)),
    h("td", { "data-label": "ESS" }, Math.round(g.ess).toLocaleString("en-US")),
    h("td", { "data-label": "Fit" }, `${g.fit_id}, ${age(g.fitted_at)} ago`));
}

function svgNode(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const xOf = (value) => AXIS.left + Math.min(Math.max(value, 0), 1) * (AXIS.right - AXIS.left);

// One group's interval: the shared 0–1 axis's gridlines, a line from the interval's low to its
// high end and a dot at the mean; the tick labels show only where the table has no header.
function intervalSvg(g) {
  const [low, high] = g.interval;
  const model = g.model || "any model";
  const svg = svgNode("svg", {
    viewBox: `0 0 ${AXIS.width} 34`, class: "quality-interval", role: "img",
    "aria-label": `${g.role}, ${g.tool}, ${model}: mean ${g.mean.toFixed(3)}, 90% interval ${low.toFixed(3)} to ${high.toFixed(3)}, on a scale from 0 to 1`,
    "data-mean": g.mean, "data-low": low, "data-high": high,
  });
  for (const tick of TICKS) {
    svg.append(svgNode("line", { x1: xOf(tick), x2: xOf(tick), y1: 3, y2: 21, class: "quality-grid" }));
    svg.append(svgNode("text", { x: xOf(tick), y: 32, class: "quality-tick" }, String(tick)));
  }
  svg.append(svgNode("line", { x1: xOf(low), x2: xOf(high), y1: 12, y2: 12, class: "quality-range" }));
  svg.append(svgNode("circle", { cx: xOf(g.mean), cy: 12, r: 5, class: "quality-dot" }));
  return svg;
}

function axisLabels() {
  const svg = svgNode("svg", { viewBox: `0 0 ${AXIS.width} 16`, class: "quality-axis", "aria-hidden": "true" });
  for (const tick of TICKS) svg.append(svgNode("text", { x: xOf(tick), y: 12, class: "quality-tick" }, String(tick)));
  return svg;
}

function when(iso) {
  return new Date(iso).toLocaleString("en-GB", {
    timeZone: "UTC", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
  }) + " UTC";
}
