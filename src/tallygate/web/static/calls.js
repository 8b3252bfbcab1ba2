// The call records panel: GET /api/v1/usage/calls, newest first, a page at a time with the
// API's cursor; CSV/NDJSON downloads of the same records through /api/v1/usage/export.

import { getJSON, searchParams } from "./api.js";
import * as fmt from "./format.js";
import { t } from "./i18n.js";

const PAGE = 50;

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.append(td);
  return td;
}

function tags(metadata) {
  if (!metadata) return "";
  return Object.entries(metadata).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
}

export class CallsPanel {
  constructor(els, { keyName, show }) {
    this.els = els;
    this.keyName = keyName;
    this.show = show;
    this.generation = 0;
    this.shown = 0;
    els.more.addEventListener("click", () => this.loadPage());
  }

  /** Show the records for these filter fields; scope describes a drill-down (or null). */
  load(fields, scope, tz) {
    this.fields = fields;
    this.scope = scope;
    this.tz = tz;
    this.cursor = null;
    this.shown = 0;
    this.generation += 1;
    this.els.body.replaceChildren();
    this.els.scope.textContent = scope ? t("calls.scope", { scope }) : t("calls.scopeAll");
    this.els.scope.dataset.scoped = scope ? "true" : "false";
    this.els.reset.hidden = !scope;
    for (const [link, format] of [[this.els.csv, "csv"], [this.els.ndjson, "ndjson"]]) {
      link.href = `/api/v1/usage/export?${searchParams({ ...fields, what: "calls", format })}`;
    }
    return this.loadPage();
  }

  /** The same records again (after a change of language). */
  reload() {
    return this.fields ? this.load(this.fields, this.scope, this.tz) : null;
  }

  async loadPage() {
    const generation = this.generation;
    const { box, message, more } = this.els;
    box.dataset.state = "loading";
    message.textContent = t("state.loading");
    more.disabled = true;
    let page;
    try {
      page = await getJSON("/api/v1/usage/calls",
        searchParams({ ...this.fields, limit: PAGE, cursor: this.cursor }));
    } catch (error) {
      if (generation !== this.generation) return;
      box.dataset.state = "error";
      this.show(message, error);
      return;
    } finally {
      more.disabled = false;
    }
    if (generation !== this.generation) return;
    this.els.body.append(...page.data.map((record) => this.row(record)));
    this.shown += page.data.length;
    this.cursor = page.next_cursor;
    more.hidden = !page.has_more;
    box.dataset.state = this.shown ? "ready" : "empty";
    message.textContent = this.shown ? "" : t("state.noDataRange");
    this.els.count.textContent = this.shown === 0 ? ""
      : t(page.has_more ? "calls.shown" : "calls.end", { n: fmt.integer(this.shown) });
  }

  row(r) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    cell(tr, fmt.fullDateTime(r.ts, this.tz), "nowrap").title = r.ts;
    cell(tr, r.api_key_id === null ? t("bd.noKey") : this.keyName(r.api_key_id)).title = r.api_key_id ?? "";
    cell(tr, r.model).title = r.upstream_model ? t("calls.upstreamModel", { model: r.upstream_model }) : "";
    cell(tr, t(`type.${r.call_type}`));
    cell(tr, r.endpoint ?? "");
    const repeats = r.repeats ?? 1;
    const status = cell(tr, repeats > 1 ? `${r.status_code} ×${fmt.integer(repeats)}` : String(r.status_code),
      r.status_code === 429 ? "num warn nowrap" : r.status_code >= 400 ? "num bad nowrap" : "num nowrap");
    if (repeats > 1) status.title = t("calls.repeats", { n: fmt.integer(repeats) });
    for (const field of ["input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"]) {
      const td = cell(tr, `${r.estimated ? "≈" : ""}${fmt.integer(r[field] ?? 0)}`, "num");
      if (r.estimated) td.title = t("calls.estimated");
    }
    cell(tr, r.unit && r.units ? fmt.units({ [r.unit]: r.units }) : "—", "num nowrap");
    const cost = cell(tr, "", "num");
    fmt.fill(cost, r.cost, (v) => fmt.exactMoney(v, this.currency ?? "USD"), "—");
    for (const field of ["latency_ms", "ttft_ms"]) fmt.fill(cell(tr, "", "num"), r[field], fmt.milliseconds, "—");
    cell(tr, tags(r.metadata), "small muted");
    return tr;
  }
}
