// Cost: the tenant's LLM spend over a chosen range (totals, then over time by model and by
// user), and its budgets with how much of each is burnt.
import { api, credential, h, liveEvents, onLeave, onceAfter, show } from "../core.js";

const NS = "http://www.w3.org/2000/svg";
const RANGES = {
  "24h": { label: "Last 24 hours", hours: 24, interval: "hour" },
  "7d": { label: "Last 7 days", hours: 24 * 7, interval: "day" },
  "30d": { label: "Last 30 days", hours: 24 * 30, interval: "day" },
};
const DIMENSIONS = [
  { group_by: "model", title: "Spend by model", noun: "model", none: "(no model)" },
  { group_by: "user", title: "Spend by user", noun: "user", none: "(no user)" },
];
// Distinct on white and from each other; the legend and the table say the same in text.
const COLOURS = ["#2453c9", "#c2410c", "#1f7a45", "#8e44ad", "#0e7490", "#b3261e", "#9a6200"];
const OTHER_COLOUR = "#5b6476";
const MAX_SERIES = COLOURS.length;
// Budgets are set and deleted on the admin log, which the event stream does not carry, and
// the ledger counts a call a moment after its usage.recorded: the page also reads again
// every few seconds while it is in view.
const REFRESH_MS = 10_000;
const LIVE_TYPES = "usage.recorded,budget.set,budget.deleted,budget.threshold_crossed,budget.exceeded";

export default async function costView() {
  const params = new URLSearchParams(location.search);
  let range = RANGES[params.get("range")] ? params.get("range") : "24h";
  const select = h("select", { name: "range", id: "cost-range" },
    Object.entries(RANGES).map(([value, r]) => h("option", { value, selected: value === range }, r.label)));
  const form = h("div", { class: "filters cost-range" }, h("label", { for: "cost-range" }, "Range"), select);

  const totals = section("cost-totals", "Totals");
  const charts = DIMENSIONS.map((d) => section(`cost-by-${d.group_by}`, d.title));
  const budgets = section("cost-budgets", "Budgets");
  show(h("h1", {}, "Cost"), form, totals.node, ...charts.map((c) => c.node), budgets.node);

  let latest = 0;
  let drawn = null;
  // The charts fit the page's width: drawn again when it changes.
  const draw = (resized = false) => {
    if (!drawn) return;
    drawn.reports.forEach((report, i) => {
      const key = resized ? null : JSON.stringify([report, slotsOf(drawn.span)[0]]);
      charts[i].render(key, () => spendOverTime(report, DIMENSIONS[i], drawn.span, charts[i].body));
    });
  };
  const load = async () => {
    const mine = ++latest;
    const r = RANGES[range];
    const end = new Date();
    const span = { start: new Date(end.getTime() - r.hours * 3600_000), end, ...r };
    const usage = (d) => api(`/usage?${new URLSearchParams({
      group_by: d.group_by, interval: r.interval, from: span.start.toISOString(),
    })}`);
    const [budgetList, ...reports] = await Promise.allSettled([api("/budgets"), ...DIMENSIONS.map(usage)]);
    if (mine !== latest) return;  // a newer read is on its way
    const failed = reports.find((p) => p.status === "rejected");
    if (failed) {
      const message = refusal(failed.reason, "usage", "usage:read");
      for (const part of [totals, ...charts]) part.fail(message);
      drawn = null;
    } else {
      const total = reports[0].value.total;
      totals.render(JSON.stringify([total, when(span.start)]), () => totalFigures(total, span));
      drawn = { reports: reports.map((p) => p.value), span };
      draw();
    }
    if (budgetList.status === "rejected") {
      budgets.fail(refusal(budgetList.reason, "budgets", "budgets:read"));
    } else {
      const items = budgetList.value.items;
      budgets.render(JSON.stringify(items), () => [budgetTable(items)]);
    }
  };
  select.addEventListener("change", () => {
    range = select.value;
    history.replaceState({}, "", `/ui/cost?range=${range}`);
    load();
  });
  await load();

  const scopes = credential()?.scopes;
  if (!scopes || scopes.includes("tasks:read")) {
    onLeave(liveEvents(onceAfter(() => load()), `?types=${LIVE_TYPES}`));
  }
  const timer = setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
  onLeave(() => clearInterval(timer));
  let resizing = null;
  const onResize = () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => draw(true), 150);
  };
  window.addEventListener("resize", onResize);
  onLeave(() => window.removeEventListener("resize", onResize));
}

// A section with its heading, an alert for what went wrong and a body. The body is built
// again only when what it shows (``key``) changed, so a read every few seconds leaves the
// page, and the keyboard's place in it, alone while nothing changes.
function section(id, title) {
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div", { class: "cost-body" });
  let shown;
  return {
    node: h("section", { class: "cost-section", id, "aria-labelledby": `${id}-title` },
      h("h2", { id: `${id}-title` }, title), error, body),
    body,
    render(key, build) {
      if (key !== null && key === shown) return;
      shown = key;
      error.textContent = "";
      body.replaceChildren(...build());
    },
    fail(message) {
      shown = undefined;
      error.textContent = message;
      body.replaceChildren();
    },
  };
}

function refusal(exc, what, scope) {
  return exc?.status === 403
    ? `This credential cannot read ${what}: it needs the ${scope} scope.`
    : exc?.message || `The ${what} could not be read.`;
}

// -- figures ------------------------------------------------------------------------------
function usd(value) {
  return value >= 100
    ? `$${value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`
    : `$${value.toFixed(4)}`;
}

// A limit as set: whole cents unless it has finer ones.
const limitUsd = (value) => (Math.round(value * 100) === value * 100 ? `$${value.toFixed(2)}` : usd(value));
const count = (n) => n.toLocaleString("en-US");
const plural = (n, one, many = `${one}s`) => `${count(n)} ${n === 1 ? one : many}`;

function when(date, interval = "minute") {
  const options = { timeZone: "UTC", day: "numeric", month: "short" };
  if (interval !== "day") Object.assign(options, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  return `${new Date(date).toLocaleString("en-GB", options)}${interval === "day" ? "" : " UTC"}`;
}

const hourOf = (at) => new Date(at).toISOString().slice(11, 16);

function totalFigures(total, span) {
  const facts = [
    ["Spend", usd(total.cost_usd)],
    ["LLM calls", count(total.calls)],
    ["Tokens", count(total.total_tokens)],
    ["Unpriced calls", count(total.unpriced_calls)],
    ["Estimated calls", count(total.estimated_calls)],
  ];
  return [
    h("p", { class: "cost-span" }, `${span.label}: from ${when(span.start)} to now.`),
    h("dl", { class: "cost-totals" },
      facts.map(([term, value]) => h("div", { "data-total": term }, h("dt", {}, term), h("dd", {}, value)))),
  ];
}

// -- spend over time ----------------------------------------------------------------------
// The groups of a report as drawn: the costliest first, the rest folded into one "other".
function seriesOf(report, dimension) {
  const named = report.groups.slice(0, report.groups.length > MAX_SERIES ? MAX_SERIES - 1 : MAX_SERIES);
  const rest = report.groups.slice(named.length);
  const series = named.map((g, i) => ({
    key: g.key ?? "", label: g.key ?? dimension.none, colour: COLOURS[i], group: g,
    points: new Map(g.series.map((p) => [Date.parse(p.start), p])),
  }));
  if (rest.length) {
    const points = new Map();
    const sum = { calls: 0, total_tokens: 0, cost_usd: 0 };
    for (const g of rest) {
      for (const key of Object.keys(sum)) sum[key] += g[key];
      for (const p of g.series) {
        const at = Date.parse(p.start);
        const into = points.get(at) || { start: p.start, calls: 0, total_tokens: 0, cost_usd: 0 };
        into.calls += p.calls;
        into.total_tokens += p.total_tokens;
        into.cost_usd += p.cost_usd;
        points.set(at, into);
      }
    }
    series.push({
      key: "(other)", label: `${rest.length} other ${dimension.noun}s`, colour: OTHER_COLOUR,
      group: sum, points,
    });
  }
  return series;
}

// Each hour or day of the range, from the one holding its start to the one holding its end.
function slotsOf(span) {
  const step = span.interval === "hour" ? 3600_000 : 86400_000;
  const first = Math.floor(span.start.getTime() / step) * step;
  const slots = [];
  for (let at = first; at <= span.end.getTime(); at += step) slots.push(at);
  return slots;
}

function spendOverTime(report, dimension, span, container) {
  if (!report.groups.length) {
    return [h("p", { class: "empty" }, `No LLM usage in the ${span.label.toLowerCase()}.`)];
  }
  const series = seriesOf(report, dimension);
  const per = span.interval === "hour" ? "hour" : "day";
  return [
    chart(series, report, dimension, span, container.clientWidth),
    legend(series, dimension),
    spendTable(series, report, dimension, per),
  ];
}

function svgNode(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A round upper bound for the y axis and its step, for about four gridlines.
function niceScale(max) {
  if (max <= 0) return { top: 1, step: 0.25 };
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough);
  return { top: Math.ceil(max / step) * step, step };
}

// Stacked bars: one per hour or day of the range, a segment per group, in dollars.
function chart(series, report, dimension, span, measured) {
  const width = Math.max(300, Math.min(measured || 720, 1060));
  const height = 230;
  const margin = { left: 62, right: 10, top: 12, bottom: 30 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const slots = slotsOf(span);
  const totals = new Map(report.total.series.map((p) => [Date.parse(p.start), p]));
  const { top, step } = niceScale(Math.max(0, ...[...totals.values()].map((p) => p.cost_usd)));
  const y = (value) => margin.top + plotH - (value / top) * plotH;
  const slotW = plotW / slots.length;
  const barW = Math.max(2, Math.min(slotW * 0.7, 48));
  const per = span.interval === "hour" ? "hour" : "day";
  const svg = svgNode("svg", {
    viewBox: `0 0 ${width} ${height}`, width, class: "cost-chart", role: "img",
    "data-group-by": dimension.group_by,
    "aria-label": `${dimension.title} per ${per}, ${span.label.toLowerCase()}: `
      + series.map((s) => `${s.label} ${usd(s.group.cost_usd)}`).join(", ")
      + ". The table below has the figures.",
  });
  for (let value = 0; value <= top + step / 2; value += step) {
    svg.append(svgNode("line", { x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value), class: value ? "cost-grid" : "cost-baseline" }));
    svg.append(svgNode("text", { x: margin.left - 6, y: y(value) + 4, class: "cost-y" }, `$${+value.toPrecision(3)}`));
  }
  const every = Math.ceil(slots.length / Math.max(1, Math.floor(plotW / 64)));
  slots.forEach((at, i) => {
    const x = margin.left + i * slotW + (slotW - barW) / 2;
    let base = 0;
    for (const s of series) {
      const p = s.points.get(at);
      if (!p || p.cost_usd <= 0) continue;
      const rect = svgNode("rect", {
        x, width: barW, y: y(base + p.cost_usd), height: Math.max(1, y(base) - y(base + p.cost_usd)),
        fill: s.colour, class: "cost-bar", "data-key": s.key, "data-start": p.start, "data-cost": p.cost_usd,
      });
      rect.append(svgNode("title", {}, `${s.label}, ${when(at, span.interval)}: ${usd(p.cost_usd)}, ${plural(p.total_tokens, "token")}`));
      svg.append(rect);
      base += p.cost_usd;
    }
    if ((slots.length - 1 - i) % every === 0) {
      svg.append(svgNode("text", { x: x + barW / 2, y: height - 10, class: "cost-x" },
        span.interval === "hour" ? hourOf(at) : when(at, "day")));
    }
  });
  return h("div", { class: "cost-chart-frame" }, svg);
}

function legend(series, dimension) {
  return h("ul", { class: "cost-legend", "aria-label": `${dimension.title}: legend` },
    series.map((s) => h("li", { "data-key": s.key },
      swatch(s.colour),
      h("span", { class: "cost-legend-key" }, s.label), " ",
      `${usd(s.group.cost_usd)} · ${plural(s.group.calls, "call")} · ${plural(s.group.total_tokens, "token")}`)));
}

function swatch(colour) {
  const svg = svgNode("svg", { viewBox: "0 0 12 12", width: 12, height: 12, class: "cost-swatch", "aria-hidden": "true" });
  svg.append(svgNode("rect", { width: 12, height: 12, rx: 2, fill: colour }));
  return svg;
}

// The chart's figures: a row per hour or day with usage, a column per group, the totals last.
function spendTable(series, report, dimension, per) {
  const cell = (point, label, key) => h("td", { "data-label": label, "data-key": key },
    point ? [usd(point.cost_usd), h("br"), h("span", { class: "cost-tokens" }, plural(point.total_tokens, "token"))] : "—");
  const rows = report.total.series.map((total) => {
    const at = Date.parse(total.start);
    return h("tr", { "data-start": total.start },
      h("th", { scope: "row", "data-label": per === "hour" ? "Hour" : "Day" }, when(at, per === "hour" ? "hour" : "day")),
      series.map((s) => cell(s.points.get(at), s.label, s.key)),
      cell(total, "All", "(all)"));
  });
  return h("div", { class: "cost-table-frame" },
    h("table", { class: "cost-table", "data-group-by": dimension.group_by },
      h("caption", {}, `${dimension.title} per ${per === "hour" ? "hour (UTC)" : "UTC day"}`),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, per === "hour" ? "Hour" : "Day"),
        series.map((s) => h("th", { scope: "col" }, s.label)),
        h("th", { scope: "col" }, "All"))),
      h("tbody", {}, rows),
      h("tfoot", {}, h("tr", { "data-start": "" },
        h("th", { scope: "row", "data-label": "Range" }, "Whole range"),
        series.map((s) => cell(s.group, s.label, s.key)),
        cell(report.total, "All", "(all)")))));
}

// -- budgets ------------------------------------------------------------------------------
const WINDOWS = { task: "each task", hour: "rolling hour", day: "UTC day", month: "UTC month" };

function budgetTable(items) {
  if (!items.length) {
    return h("p", { class: "empty" }, "No budget set. A budget is set with PUT /budgets/{scope}/{scope_id}.");
  }
  const columns = ["Scope", "Scope id", "Window", "Limit", "Spent", "Remaining", "Burn", "Kind", "Window ends"];
  return h("div", { class: "cost-table-frame" },
    h("table", { class: "cost-budgets", "aria-label": "Budgets" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, items.map(budgetRow))));
}

function amounts(usdValue, tokens) {
  const parts = [];
  if (usdValue !== null && usdValue !== undefined) parts.push(usd(usdValue));
  if (tokens !== null && tokens !== undefined) parts.push(plural(tokens, "token"));
  return parts.join(" · ") || "—";
}

function budgetRow(b) {
  const limit = [b.limit_usd === null ? null : limitUsd(b.limit_usd), b.limit_tokens === null ? null : plural(b.limit_tokens, "token")]
    .filter(Boolean).join(" or ");
  const ends = b.window === "task"
    ? (b.task_id ? ["when task ", h("a", { href: `/ui/tasks/${b.task_id}` }, b.task_id.slice(0, 8)), " ends"] : "when each task ends")
    : (b.window_end ? when(b.window_end) : "—");
  return h("tr", { "data-scope": b.scope, "data-scope-id": b.scope_id },
    h("td", { "data-label": "Scope" }, b.scope),
    h("td", { "data-label": "Scope id", class: "cost-id" }, b.scope_id),
    h("td", { "data-label": "Window" }, WINDOWS[b.window] || b.window),
    h("td", { "data-label": "Limit" }, limit),
    h("td", { "data-label": "Spent" }, amounts(b.spent_usd, b.spent_tokens)),
    h("td", { "data-label": "Remaining" }, amounts(b.remaining_usd, b.remaining_tokens)),
    h("td", { "data-label": "Burn" }, burn(b)),
    h("td", { "data-label": "Kind" }, b.hard ? "hard: stops calls" : "soft: warns"),
    h("td", { "data-label": "Window ends" }, ends));
}

// How much of the budget is spent: a bar filled to the ratio (full past the limit), a mark
// at each threshold, and the same in words.
function burn(b) {
  const W = 160, H = 20, bar = { y: 4, height: 12 };
  const crossed = b.thresholds.filter((t) => b.ratio >= t);
  const state = b.ratio >= 1 ? "over" : crossed.length ? "warn" : "ok";
  const percent = (r) => `${+(r * 100).toFixed(1)}%`;
  const words = b.ratio >= 1
    ? `${percent(b.ratio)}: over the limit`
    : crossed.length ? `${percent(b.ratio)}: past ${percent(Math.max(...crossed))}` : percent(b.ratio);
  const svg = svgNode("svg", {
    viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: `cost-burn burn-${state}`, role: "img",
    "data-ratio": b.ratio,
    "aria-label": `${percent(b.ratio)} of the limit spent; thresholds at ${b.thresholds.map(percent).join(", ") || "none"}`,
  });
  svg.append(svgNode("rect", { x: 0.5, width: W - 1, ...bar, rx: 3, class: "cost-burn-track" }));
  svg.append(svgNode("rect", { x: 0.5, width: (W - 1) * Math.min(Math.max(b.ratio, 0), 1), ...bar, rx: 3, class: "cost-burn-fill" }));
  for (const t of b.thresholds) {
    svg.append(svgNode("line", { x1: W * t, x2: W * t, y1: 0, y2: H, class: "cost-threshold", "data-threshold": t }));
  }
  return h("div", { class: "cost-burn-cell" }, svg, h("span", { class: "cost-burn-words" }, words));
}
