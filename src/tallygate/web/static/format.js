// Formatting only: every figure comes from the API as it is, and is only laid out here.
// Money arrives as a decimal string and is handed to Intl as a string, which formats it
// exactly (no float on the way). Ratios arrive as JSON numbers: they are handed to Intl as
// their shortest decimal text, which is the figure the API wrote, so 0.00115 rounds as the
// decimal 0.00115 does (0.12 points), not as the nearest double (0.1149999...).

import { locale, t } from "./i18n.js";

const cache = new Map();

function numberFormat(options) {
  const key = locale() + JSON.stringify(options);
  if (!cache.has(key)) cache.set(key, new Intl.NumberFormat(locale(), options));
  return cache.get(key);
}

export function integer(value) {
  return numberFormat({ maximumFractionDigits: 0 }).format(value);
}

/** A cost for display: cents for amounts of 1 or more, up to six decimals below. */
export function money(amount, currency) {
  const small = /^-?0*(\.|$)/.test(amount); // below 1 in magnitude
  return numberFormat({
    style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: small ? 6 : 2,
  }).format(amount);
}

/** A cost with every decimal the ledger holds (1e-9). */
export function exactMoney(amount, currency) {
  return numberFormat({
    style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: 9,
  }).format(amount);
}

/** A number's decimal text times 10^power, exactly: the decimal point moves, no float
 * arithmetic rounds it on the way. */
function shifted(value, power = 0) {
  const [digits, exponent = "0"] = String(value).split("e");
  return power === 0 && exponent === "0" ? digits : `${digits}e${Number(exponent) + power}`;
}

export function rate(ratio) {
  return numberFormat({ style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2 })
    .format(shifted(ratio));
}

/** A change against the previous period: relative for counts, in points for rates. */
export function change(value, isRate) {
  // A tiny change keeps its sign ("+0%"), so it matches its arrow.
  const signDisplay = value === 0 ? "never" : "always";
  if (isRate) {
    const points = numberFormat({
      signDisplay, minimumFractionDigits: 2, maximumFractionDigits: 2,
    }).format(shifted(value, 2));
    return `${points} ${t("card.pp")}`;
  }
  return numberFormat({ style: "percent", signDisplay, maximumFractionDigits: 1 })
    .format(shifted(value));
}

/** Units of each kind a call was billed by (`{"page": 12, "second": 340}`), in one line. */
export function units(byKind) {
  const kinds = Object.entries(byKind ?? {}).filter(([, n]) => n);
  if (!kinds.length) return "—";
  return kinds.map(([unit, n]) => `${integer(n)} ${t(`unit.${unit}`)}`).join(" · ");
}

export function milliseconds(value) {
  return `${numberFormat({ maximumFractionDigits: 1 }).format(value)} ms`;
}

export function compact(value) {
  return numberFormat({ notation: "compact", maximumFractionDigits: 1 }).format(value);
}

/** A format for a metric's values: integers, or money for cost. */
export function metricValue(metric, value, currency) {
  return metric === "cost" ? exactMoney(String(value), currency) : integer(value);
}

export function dateTime(iso, timeZone) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone, year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  }).format(new Date(iso));
}

export function fullDateTime(iso, timeZone) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).format(new Date(iso));
}

export function date(iso, timeZone) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone, year: "numeric", month: "short", day: "numeric",
  }).format(new Date(iso));
}

/** A trend bucket's label ("2026-11-21" or "2026-11-01T01:00-04:00") in its own wall-clock
 * time: the label already is local time in the chosen zone, so it is shown, not converted. */
export function bucketLabel(label, granularity) {
  const match = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}))?/.exec(label);
  if (!match) return label;
  const [, y, mo, d, h = "0", mi = "0"] = match;
  const wall = new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi));
  const options = granularity === "day"
    ? { timeZone: "UTC", month: "short", day: "numeric", weekday: "short" }
    : { timeZone: "UTC", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit",
        hourCycle: "h23" };
  return new Intl.DateTimeFormat(locale(), options).format(wall);
}

/** Put a value into a cell or card: the formatted text, or "No data" marked as such. */
export function fill(el, value, formatter, noDataText = t("state.noData")) {
  const missing = value === null || value === undefined;
  el.textContent = missing ? noDataText : formatter(value);
  el.classList.toggle("nodata", missing);
  if (missing) el.title = t("state.noData");
  else el.removeAttribute("title");
}
