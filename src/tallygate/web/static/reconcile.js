// The Reconciliation view of the usage page (admins): for each [[providers]] entry, its last
// stored comparison with the provider's own report (GET /api/v1/reconciliation/last), the
// rows that differ (or all), and a button that runs it again now. Each row links to the
// calls of its day (a UTC day) and model.

import { getJSON, searchParams } from "./api.js";
import * as fmt from "./format.js";
import { t } from "./i18n.js";

const MEASURES = ["requests", "input_tokens", "cached_input_tokens", "cache_write_tokens",
  "output_tokens", "cost"];
const PERIOD = "30d";

function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function nextDay(day) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

/** The page's own link to the calls of one UTC day and the public models of a row. */
export function callsHref(row) {
  const params = searchParams({ model: row.models, start: row.day, end: nextDay(row.day), tz: "UTC" });
  return `/?${params}#calls`;
}

function figure(value, measure, currency) {
  if (value === null || value === undefined) return "—";
  return measure === "cost" ? fmt.exactMoney(value, currency) : fmt.integer(value);
}

function difference(value, measure, currency) {
  if (value === null || value === undefined || value === 0 || value === "0.00") return "";
  const negative = typeof value === "string" ? value.startsWith("-") : value < 0;
  const size = typeof value === "string" ? value.replace(/^-/, "") : Math.abs(value);
  return `${negative ? "−" : "+"}${figure(size, measure, currency)}`;
}

export class ReconciliationPanel {
  constructor(els, { show }) {
    this.els = els;
    this.show = show;
    this.providers = [];
    this.everyRow = false;
    els.all.addEventListener("change", () => {
      this.everyRow = els.all.checked;
      this.render();
    });
  }

  async load() {
    const { box, message } = this.els;
    box.dataset.state = "loading";
    message.textContent = t("state.loading");
    try {
      this.providers = (await getJSON("/api/v1/reconciliation/last")).providers;
    } catch (error) {
      box.dataset.state = "error";
      this.show(message, error);
      return;
    }
    this.els.section.hidden = this.providers.length === 0;
    this.render();
  }

  async run(name, button) {
    button.disabled = true;
    button.textContent = t("rec.running");
    try {
      await getJSON("/api/v1/reconciliation", searchParams({ provider: name, period: PERIOD }));
    } catch (error) {
      // The failed run is stored too: reloading shows it with the provider's reason.
      console.error("reconciliation failed:", error);
    }
    await this.load();
  }

  render() {
    const { box, message, list } = this.els;
    list.replaceChildren(...this.providers.map((p) => this.provider(p)));
    box.dataset.state = this.providers.length ? "ready" : "empty";
    message.textContent = this.providers.length ? "" : t("rec.none");
  }

  provider(p) {
    const article = el("article", "rec-provider");
    article.dataset.provider = p.name;
    const head = el("div", "panel-head");
    const title = el("h3", "", `${p.name} · ${p.kind}`);
    const button = el("button", "", t("rec.runNow"));
    button.type = "button";
    button.dataset.run = p.name;
    button.addEventListener("click", () => this.run(p.name, button));
    head.append(title, button);
    article.append(head);
    const run = p.last;
    const summary = el("p", "small rec-summary");
    article.append(summary);
    if (!run) {
      summary.textContent = t("rec.never");
      return article;
    }
    summary.dataset.status = run.status;
    const when = fmt.fullDateTime(run.created_at, "UTC");
    if (run.status === "error") {
      summary.textContent = t("rec.failed", { when, error: run.error });
      summary.classList.add("bad");
      return article;
    }
    const result = run.result;
    const counts = Object.entries(result.counts).filter(([, n]) => n)
      .map(([status, n]) => `${fmt.integer(n)} ${t(`rec.status.${status}`)}`).join(" · ");
    summary.textContent = t("rec.summary", {
      when, start: result.start, end: result.end, counts: counts || t("rec.nothing"),
    });
    const rows = result.rows.filter((r) => this.everyRow || r.status !== "match");
    if (!rows.length) {
      article.append(el("p", "small ok", t("rec.allAgree")));
      return article;
    }
    article.append(this.table(result, rows));
    return article;
  }

  table(result, rows) {
    const measures = MEASURES.filter((m) => result.measures.includes(m));
    const wrap = el("div", "table-wrap");
    const table = el("table", "data rec-table");
    const head = table.createTHead().insertRow();
    for (const name of ["day", "model", "status", ...measures.map((m) => `m.${m}`), "estimated", "calls"]) {
      const th = el("th", "", t(`rec.${name}`));
      th.scope = "col";
      head.append(th);
    }
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.day = row.day;
      tr.dataset.model = row.upstream_model;
      tr.dataset.status = row.status;
      tr.insertCell().textContent = row.day;
      const model = tr.insertCell();
      model.textContent = row.upstream_model;
      if (row.models.length) model.title = row.models.join(", ");
      const status = tr.insertCell();
      status.textContent = t(`rec.status.${row.status}`);
      status.className = `rec-${row.status}`;
      for (const measure of measures) {
        const td = tr.insertCell();
        td.className = "num";
        const cell = row.cells[measure];
        if (!cell) continue;
        td.dataset.measure = measure;
        td.classList.add(`rec-${cell.status}`);
        td.title = `${t(`rec.status.${cell.status}`)}: ${t("rec.provider")} ${figure(cell.provider, measure, result.currency)}, tallygate ${figure(cell.tallygate, measure, result.currency)}`;
        td.append(el("span", "", `${figure(cell.provider, measure, result.currency)} / ${figure(cell.tallygate, measure, result.currency)}`));
        const diff = difference(cell.difference, measure, result.currency);
        if (diff) td.append(el("span", "small rec-diff", ` (${diff})`));
      }
      tr.insertCell().textContent = row.estimated_calls ? fmt.integer(row.estimated_calls) : "";
      const link = tr.insertCell();
      if (row.models.length) {
        const a = el("a", "", t("rec.openCalls"));
        a.href = callsHref(row);
        link.append(a);
      }
    }
    wrap.append(table);
    return wrap;
  }
}
