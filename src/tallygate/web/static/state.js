// The usage page's state lives in the URL's query string, so a view can be bookmarked and
// shared. Filter parameters have the API's names and meanings (end is exclusive).

export const PERIODS = ["1d", "3d", "7d", "30d"];
export const METRICS = ["requests", "total_tokens", "input_tokens", "output_tokens", "cache_write_tokens", "cost"];
export const GRANULARITIES = ["day", "hour", "minute"];
export const GROUPS = ["api_key", "model", "call_type", "model_category"];
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86400000;

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function defaultState() {
  return {
    keys: [], models: [], categories: [], callTypes: [],
    period: "7d", start: null, end: null, tz: browserZone(),
    metric: "requests", granularity: "auto", chart: "line", groupBy: ["model"], sort: "-calls",
  };
}

function oneOf(value, allowed, fallback) {
  return allowed.includes(value) ? value : fallback;
}

export function readState(search) {
  const q = new URLSearchParams(search);
  const state = defaultState();
  state.keys = q.getAll("api_key_id");
  state.models = q.getAll("model");
  state.categories = q.getAll("model_category");
  state.callTypes = q.getAll("call_type");
  state.start = q.get("start");
  state.end = q.get("end");
  state.period = state.start || state.end ? null : (q.get("period") || "7d");
  state.tz = q.get("tz") || state.tz;
  state.metric = oneOf(q.get("metric"), METRICS, "requests");
  state.granularity = oneOf(q.get("granularity"), GRANULARITIES, "auto");
  state.chart = oneOf(q.get("chart"), ["line", "bar"], "line");
  const groups = (q.get("group_by") || "model").split(",").filter((g) => GROUPS.includes(g));
  state.groupBy = groups.length ? [...new Set(groups)].slice(0, 2) : ["model"];
  state.sort = q.get("sort") || "-calls";
  return state;
}

/** The API's filter parameters for the state (what every usage endpoint takes). */
export function filterFields(state) {
  return {
    api_key_id: state.keys, model: state.models, model_category: state.categories,
    call_type: state.callTypes, period: state.period, start: state.start, end: state.end,
    tz: state.tz,
  };
}

/** The page's query string: the filters, then the view's choices where not the default. */
export function stateSearch(state) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filterFields(state))) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item) params.append(name, item);
    }
  }
  const defaults = defaultState();
  for (const name of ["metric", "granularity", "chart", "sort"]) {
    if (state[name] !== defaults[name]) params.set(name, state[name]);
  }
  if (state.groupBy.join(",") !== "model") params.set("group_by", state.groupBy.join(","));
  return params.toString();
}

function dayNumber(text) {
  const [y, m, d] = text.split("-").map(Number);
  return Date.UTC(y, m - 1, d) / DAY_MS;
}

/** Add days to a YYYY-MM-DD date (for the inclusive "To" field over an exclusive end). */
export function addDays(text, days) {
  return new Date((dayNumber(text) + days) * DAY_MS).toISOString().slice(0, 10);
}

export function isDate(text) {
  return typeof text === "string" && DATE.test(text);
}

/** How many calendar days the range spans, when the state says (else null). */
export function rangeDays(state) {
  if (state.period) return Number.parseInt(state.period, 10);
  if (isDate(state.start) && isDate(state.end)) return dayNumber(state.end) - dayNumber(state.start);
  return null;
}

/** Which granularities the range allows: minute up to a day, hour up to 93 days. */
export function allowedGranularities(state) {
  const days = rangeDays(state);
  return {
    day: true,
    hour: days === null ? true : days <= 93,
    minute: days !== null && days <= 1,
  };
}

/** The granularity the chart asks for: the chosen one where the range allows it. */
export function effectiveGranularity(state) {
  const allowed = allowedGranularities(state);
  if (state.granularity !== "auto" && allowed[state.granularity]) return state.granularity;
  const days = rangeDays(state);
  return days !== null && days <= 3 ? "hour" : "day";
}
