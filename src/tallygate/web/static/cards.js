// The indicator cards, from GET /api/v1/usage/summary as it is. The change against the
// previous period is the API's `change` (relative for counts, a difference for rates).

import * as fmt from "./format.js";
import { t } from "./i18n.js";

const RATES = new Set(["success_rate", "cache_hit_rate"]);
const PEAKS = new Set(["peak_rpm", "peak_tpm"]);
// Shown only where the filtered calls have any: most platforms have neither.
const OPTIONAL = new Set(["cache_write_tokens", "units"]);

function formatter(name, currency) {
  if (name === "cost") return (value) => fmt.money(value.amount, value.currency ?? currency);
  if (RATES.has(name)) return fmt.rate;
  if (name === "units") return fmt.units;
  return fmt.integer;
}

function rawValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return value.amount ?? JSON.stringify(value);
  return String(value);
}

function renderChange(el, name, summary) {
  el.className = "change small";
  delete el.dataset.change;
  if (name === "units") {  // several kinds: each its own figure, no single change
    el.textContent = t("card.unitsNote");
    el.classList.add("muted");
    return;
  }
  if (PEAKS.has(name)) {
    const since = summary.peak_window_start;
    el.textContent = since && new Date(since) > new Date(summary.start)
      ? t("card.peakSince", { start: fmt.dateTime(since, summary.tz) })
      : t("card.peakMinute");
    return;
  }
  const value = summary.change?.[name];
  if (value === null || value === undefined) {
    el.textContent = summary.cards[name] === null ? "" : t("card.noComparison");
    el.classList.add("muted");
    return;
  }
  const arrow = value > 0 ? "▲" : value < 0 ? "▼" : "＝";
  el.textContent = `${arrow} ${fmt.change(value, RATES.has(name))} ${t("card.vsPrevious")}`;
  el.classList.add(value > 0 ? "up" : value < 0 ? "down" : "flat");
  el.dataset.change = String(value);
}

export function renderCards(summary) {
  for (const card of document.querySelectorAll("[data-card]")) {
    const name = card.dataset.card;
    const value = summary.cards[name];
    if (OPTIONAL.has(name)) {
      card.hidden = !value || (typeof value === "object" && !Object.keys(value).length);
      if (card.hidden) continue;
    }
    const valueEl = card.querySelector(".value");
    fmt.fill(valueEl, value, formatter(name, summary.currency));
    card.dataset.value = rawValue(value);
    if (name === "cost" && value) valueEl.title = fmt.exactMoney(value.amount, value.currency);
    renderChange(card.querySelector(".change"), name, summary);
  }
}

export function cardsLoading() {
  for (const card of document.querySelectorAll("[data-card]")) {
    card.querySelector(".value").classList.add("stale");
  }
}

export function cardsDone() {
  for (const el of document.querySelectorAll("[data-card] .value.stale")) el.classList.remove("stale");
}
