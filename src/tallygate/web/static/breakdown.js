// The breakdown table from GET /api/v1/usage/breakdown. Sorting is the API's (`sort`); each
// row drills down to the filtered page or to its call records.

import * as fmt from "./format.js";
import { t } from "./i18n.js";

// [field, format, the API's sort column (null: the API cannot sort by it)]
const COLUMNS = [
  ["calls", "int", "calls"],
  ["success_calls", "int", "success_calls"],
  ["failed_calls", "int", "failed_calls"],
  ["rate_limited_calls", "int", "rate_limited_calls"],
  ["input_tokens", "int", "input_tokens"],
  ["output_tokens", "int", "output_tokens"],
  ["cached_input_tokens", "int", "cached_input_tokens"],
  ["cache_write_tokens", "int", "cache_write_tokens"],
  ["reasoning_tokens", "int", "reasoning_tokens"],
  ["units", "units", null],
  ["cache_hit_rate", "rate", "cache_hit_rate"],
  ["cost", "money", "cost"],
  ["p50_latency_ms", "ms", "p50_latency_ms"],
  ["p95_latency_ms", "ms", "p95_latency_ms"],
  ["p50_ttft_ms", "ms", "p50_ttft_ms"],
  ["p95_ttft_ms", "ms", "p95_ttft_ms"],
  ["peak_rpm", "int", "peak_rpm"],
  ["peak_tpm", "int", "peak_tpm"],
  ["share", "rate", null],
];
const GROUPS = new Set(["api_key", "model", "call_type", "model_category"]);
// Exact percentiles come from raw records in a second request: until then their cells wait.
const PERCENTILES = new Set(["p50_latency_ms", "p95_latency_ms", "p50_ttft_ms", "p95_ttft_ms"]);
const FORMATS = {
  int: fmt.integer,
  rate: fmt.rate,
  ms: fmt.milliseconds,
  units: fmt.units,
  money: (value) => fmt.money(value.amount, value.currency),
};

/** How a row's group value reads on the page. */
export function groupText(group, row) {
  const value = row[group];
  if (group === "api_key") return value === null ? t("bd.noKey") : (row.api_key_name ?? value);
  if (group === "call_type") return t(`type.${value}`);
  if (group === "model_category") return t(`cat.${value}`);
  return value;
}

function sortButton(th, column, label, sort, onSort) {
  const descending = sort === `-${column}`;
  const current = descending || sort === column;
  th.setAttribute("aria-sort", current ? (descending ? "descending" : "ascending") : "none");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "sort";
  button.dataset.sort = column;
  button.title = t("sort.by", { col: label });
  button.textContent = `${label}${current ? (descending ? " ▼" : " ▲") : ""}`;
  // Numbers are most useful largest first; names A to Z.
  const first = GROUPS.has(column) ? column : `-${column}`;
  button.addEventListener("click", () => {
    onSort(current ? (descending ? column : `-${column}`) : first);
  });
  th.append(button);
}

function header(groups, sort, onSort) {
  const tr = document.createElement("tr");
  for (const group of groups) {
    const th = document.createElement("th");
    th.scope = "col";
    th.className = "group";
    sortButton(th, group, t(`group.${group}`), sort, onSort);
    tr.append(th);
  }
  const actions = document.createElement("th");
  actions.scope = "col";
  actions.textContent = t("col.actions");
  tr.append(actions);
  for (const [field, , sortColumn] of COLUMNS) {
    const th = document.createElement("th");
    th.scope = "col";
    th.className = "num";
    th.dataset.col = field;
    if (sortColumn) sortButton(th, sortColumn, t(`col.${field}`), sort, onSort);
    else th.textContent = t(`col.${field}`);
    tr.append(th);
  }
  return tr;
}

function actionButton(label, title, onClick, disabled = false) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small-btn";
  button.textContent = t(label);
  button.title = t(title);
  button.disabled = disabled;
  button.addEventListener("click", onClick);
  return button;
}

function bodyRow(row, groups, pending, { onDrill, onCalls }) {
  const tr = document.createElement("tr");
  for (const group of groups) {
    const th = document.createElement("th");
    th.scope = "row";
    th.className = "group";
    th.textContent = groupText(group, row);
    th.dataset.value = row[group] ?? "";
    tr.append(th);
  }
  const actions = document.createElement("td");
  actions.className = "actions";
  const noKey = groups.includes("api_key") && row.api_key === null;
  const buttons = document.createElement("div");
  buttons.className = "row-actions";
  buttons.append(actionButton("bd.filter", "bd.filterTitle", () => onDrill(row), noKey),
    actionButton("bd.calls", "bd.callsTitle", () => onCalls(row), noKey));
  actions.append(buttons);
  tr.append(actions);
  for (const [field, format] of COLUMNS) {
    const td = document.createElement("td");
    td.className = "num";
    td.dataset.col = field;
    if (pending && PERCENTILES.has(field)) {
      td.textContent = "…";
      td.title = t("bd.percentilesPending");
      td.classList.add("pending");
    } else {
      fmt.fill(td, row[field], FORMATS[format], "—");
    }
    tr.append(td);
  }
  return tr;
}

export class BreakdownTable {
  constructor(table, box, message) {
    this.table = table;
    this.box = box;
    this.message = message;
  }

  loading() {
    this.box.dataset.state = "loading";
    this.message.textContent = t("state.loading");
  }

  failed(error, show) {
    this.box.dataset.state = "error";
    this.table.tBodies[0].replaceChildren();
    show(this.message, error);
  }

  render(data, handlers) {
    const groups = data.group_by;
    const pending = data.percentiles === undefined;
    this.table.tHead.replaceChildren(header(groups, data.sort, handlers.onSort));
    this.table.tBodies[0].replaceChildren(
      ...data.rows.map((row) => bodyRow(row, groups, pending, handlers)));
    this.box.dataset.state = data.rows.length ? "ready" : "empty";
    this.message.textContent = data.rows.length ? "" : t("state.noDataRange");
  }
}
