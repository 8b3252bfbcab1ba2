// The Usage Statistics page: filters in the URL, then the summary cards, the trend chart, the
// breakdown table and the call records, each from its /api/v1/usage endpoint.

import { getJSON, searchParams, showError } from "./api.js";
import { BreakdownTable, groupText } from "./breakdown.js";
import { CallsPanel } from "./calls.js";
import { cardsDone, cardsLoading, renderCards } from "./cards.js";
import * as fmt from "./format.js";
import { onLanguageChange, setUpLanguage, t } from "./i18n.js";
import { MultiSelect } from "./multiselect.js";
import { ReconciliationPanel } from "./reconcile.js";
import * as st from "./state.js";
import { TrendChart } from "./trend.js";
import { closeOnOutsideClick, timeZones } from "./widgets.js";

const $ = (id) => document.getElementById(id);
const show = (el, error) => showError(el, error, t);
const FILTER_FOR_GROUP = { api_key: "keys", model: "models", call_type: "callTypes",
  model_category: "categories" };

let state = st.readState(location.search);
let dimensions = null;
let dimensionsReady = Promise.resolve(); // the call records show key names, so wait for them
let generation = 0;
const last = { summary: null, trend: null, breakdown: null };

const selects = {
  keys: new MultiSelect($("key-select"), { allKey: "f.allKeys", name: "api_key_id" }),
  models: new MultiSelect($("model-select"), { allKey: "f.allModels", name: "model" }),
  categories: new MultiSelect($("category-select"), { allKey: "f.allCategories", name: "model_category" }),
  callTypes: new MultiSelect($("calltype-select"), { allKey: "f.allCallTypes", name: "call_type" }),
};
const chart = new TrendChart($("chart"), $("chart").parentElement, $("chart-state"));
const table = new BreakdownTable($("breakdown-table"), $("breakdown-table").parentElement,
  $("breakdown-state"));
const calls = new CallsPanel({
  body: $("calls-table").tBodies[0], box: $("calls-table").parentElement, message: $("calls-state"),
  count: $("calls-count"), more: $("calls-more"), scope: $("calls-scope"), reset: $("calls-reset"),
  csv: $("calls-csv"), ndjson: $("calls-ndjson"),
}, { keyName, show });

const reconciliation = $("reconciliation") ? new ReconciliationPanel({
  section: $("reconciliation"), box: $("rec-box"), list: $("rec-list"), message: $("rec-state"),
  all: $("rec-all"),
}, { show }) : null;

function keyName(id) {
  return dimensions?.api_keys.find((k) => k.id === id)?.name ?? id;
}

/** Fill the filter lists from the dimensions, keeping what the form has chosen. */
function fillOptions() {
  const d = dimensions ?? { api_keys: [], models: [], model_categories: [], call_types: [] };
  selects.keys.setOptions(d.api_keys.map((k) => ({
    value: k.id, label: k.internal ? `${k.name} · ${t("type.internal")}` : k.name,
  })));
  selects.models.setOptions(d.models.map((m) => ({
    value: m.name, label: m.name, group: m.category, groupLabel: t(`cat.${m.category}`),
  })));
  selects.categories.setOptions(d.model_categories.map((c) => ({ value: c, label: t(`cat.${c}`) })));
  selects.callTypes.setOptions(d.call_types.map((c) => ({ value: c, label: t(`type.${c}`) })));
  const who = $("who");
  if (who) who.textContent = t("nav.signedInKey", { id: keyName(who.dataset.keyId) });
}

function pressed(container, attribute, value) {
  for (const button of container.querySelectorAll(`[data-${attribute}]`)) {
    button.setAttribute("aria-pressed", String(button.dataset[attribute] === value));
  }
}

/** Put the state into the form and the view's controls. */
function showState() {
  for (const [name, select] of Object.entries(selects)) select.values = state[name];
  const zone = $("tz");
  if (![...zone.options].some((o) => o.value === state.tz)) zone.add(new Option(state.tz, state.tz));
  zone.value = state.tz;
  $("start").value = st.isDate(state.start) ? state.start : "";
  $("end").value = st.isDate(state.end) ? st.addDays(state.end, -1) : "";
  pressed($("quick"), "period", state.period);
  pressed($("metric"), "metric", state.metric);
  pressed($("chart-type"), "chart", state.chart);
  const allowed = st.allowedGranularities(state);
  for (const button of $("granularity").querySelectorAll("button")) {
    const g = button.dataset.granularity;
    button.disabled = !allowed[g];
    button.title = allowed[g] ? "" : t(g === "minute" ? "gran.minuteOnly" : "gran.hourOnly");
  }
  pressed($("granularity"), "granularity", st.effectiveGranularity(state));
  $("group1").value = state.groupBy[0];
  $("group2").value = state.groupBy[1] ?? "";
}

/** The state the form describes (filters only; the view's choices stay). */
function formState() {
  const next = { ...state };
  for (const [name, select] of Object.entries(selects)) next[name] = select.values;
  next.tz = $("tz").value;
  const start = $("start").value;
  const end = $("end").value;
  if (start || end) {
    next.period = null;
    next.start = start || null;
    next.end = end ? st.addDays(end, 1) : null;
  } else if (!next.period) {
    next.period = "7d";
    next.start = next.end = null;
  }
  return next;
}

function apply(next, how = "push") {
  state = next;
  const search = st.stateSearch(state);
  const url = search ? `?${search}` : location.pathname;
  if (how === "push") history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  showState();
}

function setDownloadLinks(fields) {
  const extra = {
    summary: {},
    trend: { metric: state.metric, granularity: st.effectiveGranularity(state) },
    breakdown: { group_by: state.groupBy.join(",") },
    calls: {},
  };
  for (const link of document.querySelectorAll("a.dl")) {
    const { what, format } = link.dataset;
    link.href = `/api/v1/usage/export?${searchParams({ ...fields, ...extra[what], what, format })}`;
  }
}

function rangeText(summary) {
  const tz = summary.tz;
  return `${t("usage.range", { start: fmt.dateTime(summary.start, tz), end: fmt.dateTime(summary.end, tz), tz })}`
    + ` · ${t("usage.previous", { start: fmt.dateTime(summary.previous_start, tz), end: fmt.dateTime(summary.previous_end, tz) })}`
    + (summary.approximate?.cards || summary.approximate?.previous ? ` · ${t("usage.approximate")}` : "");
}

async function loadSummary(g, fields) {
  const box = $("cards");
  box.dataset.state = $("rates").dataset.state = "loading";
  cardsLoading();
  try {
    const summary = await getJSON("/api/v1/usage/summary", searchParams(fields));
    if (g !== generation) return;
    last.summary = summary;
    calls.currency = summary.currency;
    renderCards(summary);
    $("range-text").textContent = rangeText(summary);
    box.dataset.state = $("rates").dataset.state = summary.cards.model_calls === null ? "empty" : "ready";
  } catch (error) {
    if (g !== generation) return;
    box.dataset.state = $("rates").dataset.state = "error";
    for (const value of document.querySelectorAll("[data-card] .value")) value.textContent = "—";
    show($("page-error"), error);
  } finally {
    if (g === generation) cardsDone();
  }
}

const ANOMALY_METRICS = ["requests", "total_tokens"];
const ANOMALY_GRANULARITIES = ["hour", "day"];

/** The spikes for the chart's filters, metric and granularity; [] when the chart cannot show
 * them, and [] (logged) when the call fails: the chart must not suffer for it. */
async function fetchAnomalies(granularity) {
  if (!ANOMALY_METRICS.includes(state.metric) || !ANOMALY_GRANULARITIES.includes(granularity)) {
    return [];
  }
  const params = { ...st.filterFields(state), kind: "spike", granularity, metric: state.metric };
  try {
    return (await getJSON("/api/v1/anomalies", searchParams(params))).data ?? [];
  } catch (error) {
    console.error("anomalies could not be loaded:", error);
    return [];
  }
}

async function loadTrend(g = generation) {
  chart.loading();
  const granularity = st.effectiveGranularity(state);
  const params = { ...st.filterFields(state), metric: state.metric, granularity, group_by: "model" };
  const anomalies = fetchAnomalies(granularity);
  try {
    const trend = await getJSON("/api/v1/usage/trend", searchParams(params));
    if (g !== generation) return;
    last.trend = trend;
    chart.anomalies = [];
    chart.render(trend, { chartType: state.chart, currency: last.summary?.currency ?? "USD" });
  } catch (error) {
    if (g === generation) chart.failed(error, show);
    return;
  }
  const found = await anomalies;
  if (g === generation) chart.setAnomalies(found);
}

/** For the admin: a notice naming the keys near a limit or their expiry, linking to /keys. */
async function loadKeyWarnings() {
  const box = $("key-warnings");
  if (!box || document.body.dataset.admin !== "true") return;
  try {
    const answer = await getJSON("/api/v1/keys");
    const flagged = (answer.data ?? answer).filter((k) => k.near_limit || k.near_expiry
      || (k.warnings ?? []).length);
    box.replaceChildren();
    if (!flagged.length) {
      box.hidden = true;
      return;
    }
    box.append(`${t("usage.keyWarnings")} `);
    flagged.forEach((key, i) => {
      const link = document.createElement("a");
      link.href = "/keys";
      link.dataset.keyId = key.id;
      link.textContent = key.name;
      const why = (key.warnings ?? []).map((w) => t(`keys.warn.${w}`));
      if (key.near_expiry && !(key.warnings ?? []).includes("expires_soon")) why.push(t("keys.warn.expires_soon"));
      box.append(...(i ? [", "] : []), link, ...(why.length ? [` (${why.join(", ")})`] : []));
    });
    box.hidden = false;
  } catch (error) {
    console.error("keys could not be loaded:", error);
    box.hidden = true;
  }
}

let breakdownRequest = 0;  // a newer breakdown (other grouping or sort) wins over an older one

async function loadBreakdown(g = generation) {
  const mine = ++breakdownRequest;
  const current = () => g === generation && mine === breakdownRequest;
  table.loading();
  const params = { ...st.filterFields(state), group_by: state.groupBy.join(","), sort: state.sort };
  try {
    const breakdown = await getJSON("/api/v1/usage/breakdown", searchParams(params));
    if (!current()) return;
    showBreakdown(breakdown);
    if (breakdown.percentiles) return;  // sorted by one: they came with it
  } catch (error) {
    if (current()) {
      $("percentiles-note").hidden = true;
      table.failed(error, show);
    }
    return;
  }
  // p50/p95 are exact, from raw records: slower on long ranges, so they follow the table.
  try {
    const full = await getJSON("/api/v1/usage/breakdown",
      searchParams({ ...params, percentiles: "true" }));
    if (current()) showBreakdown(full);
  } catch (error) {
    // The table stays; its four cells say "no figure", and the note says why.
    if (current()) {
      showBreakdown({ ...last.breakdown, percentiles: {
        available: false, reason: "failed", error: error.message || String(error) } });
    }
  }
}

function showBreakdown(breakdown) {
  last.breakdown = breakdown;
  table.render(breakdown, { onSort, onDrill, onCalls });
  const note = $("percentiles-note");
  const why = breakdown.percentiles?.available === false ? breakdown.percentiles : null;
  note.hidden = why === null;
  if (why?.reason === "raw_records_purged") {
    note.textContent = t("bd.percentilesPurged", { from: fmt.dateTime(why.raw_records_from, state.tz) });
  } else if (why?.reason === "failed") {
    note.textContent = t("bd.percentilesFailed", { error: why.error });
  } else if (why) {
    note.textContent = t("bd.percentilesTooMany", { max: fmt.integer(why.max_calls) });
  }
}

function loadAll() {
  generation += 1;
  const fields = st.filterFields(state);
  $("page-error").hidden = true;
  $("calls-table").parentElement.dataset.state = "loading";
  setDownloadLinks(fields);
  return Promise.all([loadSummary(generation, fields), loadTrend(), loadBreakdown(),
    dimensionsReady.then(() => calls.load(fields, null, state.tz))]);
}

function onSort(sort) {
  apply({ ...state, sort }, "replace");
  loadBreakdown();
}

function rowFilters(row, base) {
  const next = { ...base };
  for (const group of last.breakdown.group_by) next[FILTER_FOR_GROUP[group]] = [row[group]];
  return next;
}

function onDrill(row) {
  apply(rowFilters(row, state));
  loadAll();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

function onCalls(row) {
  const scope = last.breakdown.group_by
    .map((group) => `${t(`group.${group}`)} = ${groupText(group, row)}`).join(", ");
  calls.load(st.filterFields(rowFilters(row, state)), scope, state.tz);
  $("calls").scrollIntoView({ behavior: "smooth" });
}

function setUpGroupSelects() {
  for (const [id, withNone] of [["group1", false], ["group2", true]]) {
    const select = $(id);
    const value = select.value;
    select.replaceChildren(...(withNone ? [new Option(t("bd.none"), "")] : []),
      ...st.GROUPS.map((g) => new Option(t(`group.${g}`), g)));
    select.value = value;
  }
}

function onGroupChange() {
  const first = $("group1").value;
  const second = $("group2").value;
  const groupBy = second && second !== first ? [first, second] : [first];
  const column = state.sort.replace(/^-/, "");
  const sort = st.GROUPS.includes(column) && !groupBy.includes(column) ? "-calls" : state.sort;
  apply({ ...state, groupBy, sort }, "replace");
  loadBreakdown();
}

function wireControls() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    apply(formState());
    loadAll();
  });
  $("clear").addEventListener("click", () => {
    apply(st.defaultState());
    loadAll();
  });
  $("quick").addEventListener("click", (event) => {
    const period = event.target.closest("[data-period]")?.dataset.period;
    if (!period) return;
    apply({ ...formState(), period, start: null, end: null });
    loadAll();
  });
  $("metric").addEventListener("click", (event) => {
    const metric = event.target.closest("[data-metric]")?.dataset.metric;
    if (!metric || metric === state.metric) return;
    apply({ ...state, metric }, "replace");
    setDownloadLinks(st.filterFields(state));
    loadTrend();
  });
  $("granularity").addEventListener("click", (event) => {
    const granularity = event.target.closest("[data-granularity]")?.dataset.granularity;
    if (!granularity || granularity === st.effectiveGranularity(state)) return;
    apply({ ...state, granularity }, "replace");
    setDownloadLinks(st.filterFields(state));
    loadTrend();
  });
  $("chart-type").addEventListener("click", (event) => {
    const type = event.target.closest("[data-chart]")?.dataset.chart;
    if (!type || type === state.chart) return;
    apply({ ...state, chart: type }, "replace");
    if (last.trend) chart.render(last.trend, { chartType: state.chart, currency: last.summary?.currency ?? "USD" });
  });
  $("group1").addEventListener("change", onGroupChange);
  $("group2").addEventListener("change", onGroupChange);
  $("calls-reset").addEventListener("click", () => calls.load(st.filterFields(state), null, state.tz));
  for (const id of ["chart-png", "chart-png-menu"]) $(id).addEventListener("click", () => chart.downloadPng());
  closeOnOutsideClick($("downloads"));
  window.addEventListener("popstate", () => {
    state = st.readState(location.search);
    showState();
    loadAll();
  });
}

function rerender() {
  fillOptions();
  setUpGroupSelects();
  showState();
  const currency = last.summary?.currency ?? "USD";
  if (last.summary) {
    renderCards(last.summary);
    $("range-text").textContent = rangeText(last.summary);
  }
  if (last.trend) chart.render(last.trend, { chartType: state.chart, currency });
  loadKeyWarnings();
  if (last.breakdown) showBreakdown(last.breakdown);
  calls.reload();
  reconciliation?.render();
}

async function loadDimensions() {
  try {
    dimensions = await getJSON("/api/v1/usage/dimensions");
    fillOptions();
  } catch (error) {
    show($("page-error"), error);
  }
}

async function start() {
  setUpLanguage();
  onLanguageChange(rerender);
  $("tz").replaceChildren(...timeZones().map((zone) => new Option(zone, zone)));
  setUpGroupSelects();
  fillOptions();
  showState();
  wireControls();
  dimensionsReady = loadDimensions();
  await Promise.all([loadAll(), loadKeyWarnings(), reconciliation?.load()]);
  document.body.dataset.ready = "true";
}

start();
