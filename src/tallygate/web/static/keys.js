// The API Key Management page: the list from GET /api/v1/keys, and create, edit, disable /
// enable, rotate and delete. A secret is shown once, in a dialog, and kept nowhere else.

import { getJSON, send, showError } from "./api.js";
import { AuditPanel } from "./audit.js";
import * as fmt from "./format.js";
import { onLanguageChange, setUpLanguage, t } from "./i18n.js";
import { KeyForm } from "./keyform.js";
import { copyText } from "./widgets.js";

const $ = (id) => document.getElementById(id);
const SOON_MS = 7 * 86400000;
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const currency = document.querySelector('meta[name="currency"]')?.content || "USD";
let keys = [];
let models = [];
let audit = null;

/** A table cell holding a block of lines (the cell itself must stay a table cell). */
function linesCell() {
  const td = el("td");
  const box = el("div", "limits");
  td.append(box);
  return [td, box];
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(text, kind) {
  return el("span", `badge ${kind}`, text);
}

/** Expires within 7 days: the API's flag, or (from an API without it) the date itself. */
function expiresSoon(key) {
  if (typeof key.near_expiry === "boolean") return key.near_expiry;
  if (!key.expires_at || key.status !== "active") return false;
  const left = new Date(key.expires_at).getTime() - Date.now();
  return left > 0 && left < SOON_MS;
}

function nameCell(key) {
  const th = el("th");
  th.scope = "row";
  th.append(el("div", "", key.name), el("code", "prefix", `${key.prefix}…`));
  const about = [key.owner, key.tags.join(", ")].filter(Boolean).join(" · ");
  if (about) th.append(el("div", "small muted", about));
  return th;
}

function statusCell(key) {
  const td = el("td");
  td.append(badge(t(`keys.status.${key.status}`), key.status));
  if (key.internal) td.append(" ", badge(t("keys.internalBadge"), "internal"));
  for (const warning of key.warnings ?? []) {
    if (warning !== "expires_soon") td.append(" ", badge(t(`keys.warn.${warning}`), "warn"));
  }
  return td;
}

function limitsCell(key) {
  const [td, box] = linesCell();
  const lines = [];
  if (key.rpm_limit !== null) lines.push(`${t("keys.rpm")} ${fmt.integer(key.rpm_limit)}`);
  if (key.max_concurrency !== null && key.max_concurrency !== undefined) {
    lines.push(`${t("keys.concurrency")} ${fmt.integer(key.max_concurrency)}`);
  }
  if (key.tpm_limit !== null) lines.push(`${t("keys.tpm")} ${fmt.integer(key.tpm_limit)}`);
  if (key.discount_percent) lines.push(t("keys.discount", { n: key.discount_percent }));
  box.append(...(lines.length ? lines : [t("keys.unlimited")]).map((line) => el("div", "", line)));
  if (!lines.length) box.classList.add("muted");
  return td;
}

/** "used / limit" with a meter of the share used (the API's figure), or just the limit. */
function limitLine(text, share) {
  const line = el("div", "used");
  line.append(el("span", "", text));
  if (share !== null && share !== undefined) {
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, low: 0.8, high: 0.95, optimum: 0, value: share });
    line.append(meter, el("span", "small muted", fmt.rate(share)));
  }
  return line;
}

function quotaCell(key) {
  const [td, box] = linesCell();
  const usage = key.usage; // the current period's live figures, where the API gives them
  const money = (amount) => fmt.money(amount, currency);
  if (key.quota_tokens !== null) {
    const limit = `${fmt.integer(key.quota_tokens)} ${t("keys.quotaTokens")}`;
    box.append(limitLine(usage ? `${fmt.integer(usage.tokens)} / ${limit}` : limit, usage?.quota_used));
  }
  if (key.budget !== null) {
    const limit = money(key.budget);
    box.append(limitLine(`${t("keys.budget")} ${usage ? `${money(usage.cost)} / ${limit}` : limit}`,
      usage?.budget_used));
  }
  const limited = box.childElementCount > 0;
  if (!limited) box.append(el("div", "muted", t("keys.unlimited")));
  if (!limited && usage) {
    box.append(el("div", "", t("keys.used", { tokens: fmt.integer(usage.tokens), cost: money(usage.cost) })));
  }
  if (limited || usage) {
    const resets = usage?.period_end ? ` · ${t("keys.resets", { date: fmt.date(usage.period_end, zone) })}` : "";
    box.append(el("div", "muted", `${t(`keys.period.${key.quota_period}`)}${resets}`));
  }
  if (usage?.runs_out_at) {
    box.append(el("div", key.near_limit ? "soon-text" : "muted", t(`keys.runsOut.${usage.runs_out_of}`,
      { date: fmt.date(usage.runs_out_at, zone) })));
  }
  return td;
}

function accessCell(key) {
  const [td, box] = linesCell();
  const models = key.allowed_models;
  const ips = key.allowed_ips;
  const m = el("div", "", models ? t("keys.nModels", { n: models.length }) : t("keys.allModels"));
  if (models) m.title = models.join("\n");
  const a = el("div", "", ips ? t("keys.nIps", { n: ips.length }) : t("keys.anyIp"));
  if (ips) a.title = ips.join("\n");
  box.append(m, a);
  return td;
}

function expiresCell(key) {
  const td = el("td");
  if (!key.expires_at) {
    td.append(el("span", "muted", t("keys.never")));
    return td;
  }
  const when = el("div", "nowrap", fmt.date(key.expires_at, zone));
  when.title = fmt.dateTime(key.expires_at, zone);
  td.append(when);
  if (expiresSoon(key)) {
    const hours = Math.max(1, Math.round((new Date(key.expires_at) - Date.now()) / 3600000));
    const left = hours >= 48 ? t("keys.inDays", { n: Math.round(hours / 24) }) : t("keys.inHours", { n: hours });
    const note = el("div", "soon-text small", left);
    note.title = t("keys.expiringSoon");
    td.append(note);
  }
  return td;
}

function actionsCell(key) {
  const td = el("td", "actions");
  const box = el("div", "row-actions");
  td.append(box);
  const usage = el("a", "button small-btn", t("keys.usage"));
  usage.href = `/?api_key_id=${encodeURIComponent(key.id)}`;
  const trail = el("a", "button small-btn", t("keys.audit"));
  trail.href = auditHref(key.id);
  trail.dataset.auditKey = key.id;
  box.append(usage, trail);
  const button = (label, action, className = "small-btn") => {
    const b = el("button", className, t(label));
    b.type = "button";
    b.dataset.action = action;
    box.append(b);
  };
  button("keys.edit", "edit");
  if (key.status === "disabled") button("keys.enable", "enable");
  else button("keys.disable", "disable");
  button("keys.rotate", "rotate");
  button("keys.delete", "delete", "small-btn danger-text");
  return td;
}

function row(key) {
  const tr = el("tr");
  tr.dataset.keyId = key.id;
  tr.dataset.status = key.status;
  if (expiresSoon(key)) tr.classList.add("soon");
  if (key.near_limit) tr.classList.add("near-limit");
  tr.append(nameCell(key), statusCell(key), limitsCell(key),
    quotaCell(key), accessCell(key), expiresCell(key), el("td", "nowrap", fmt.date(key.created_at, zone)),
    actionsCell(key));
  return tr;
}

function render() {
  const box = $("keys-table").parentElement;
  $("keys-table").tBodies[0].replaceChildren(...keys.map(row));
  box.dataset.state = keys.length ? "ready" : "empty";
  $("keys-state").textContent = keys.length ? "" : t("keys.empty");
  $("keys-count").textContent = t("keys.count", { n: keys.length });
  $("usage-note").hidden = keys.length === 0 || keys.some((key) => "usage" in key);
}

/** The keys, then the audit log (which names them): both reflect every change made here. */
async function load() {
  const box = $("keys-table").parentElement;
  box.dataset.state = "loading";
  $("keys-state").textContent = t("state.loading");
  try {
    keys = (await getJSON("/api/v1/keys")).data;
    render();
  } catch (error) {
    box.dataset.state = "error";
    showError($("keys-state"), error, t);
  }
  await audit.reload();
}

/** The page with the audit log of one key (or of all keys) in view: a link to share. */
function auditHref(keyId) {
  return keyId === null ? "/keys#audit" : `/keys?audit_key=${encodeURIComponent(keyId)}#audit`;
}

function showAudit(keyId) {
  history.replaceState(null, "", auditHref(keyId));
  audit.load(keyId);
  $("audit").scrollIntoView({ block: "start" });
}

function showSecret(answer) {
  const dialog = $("secret-dialog");
  const input = $("secret-value");
  $("secret-title").textContent = t("secret.title", { name: answer.name });
  input.value = answer.key;
  $("secret-copy").textContent = t("secret.copy");
  dialog.showModal();
  input.select();
}

/** Ask before acting; the dialog stays open with the API's message if the action fails. */
function confirmThen(titleKey, bodyKey, key, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = t(titleKey, { name: key.name });
  $("confirm-body").textContent = t(bodyKey);
  $("confirm-error").hidden = true;
  confirmAction = async () => {
    $("confirm-yes").disabled = true;
    try {
      await action();
      dialog.close();
    } catch (error) {
      showError($("confirm-error"), error, t);
    } finally {
      $("confirm-yes").disabled = false;
    }
  };
  dialog.showModal();
  $("confirm-cancel").focus();
}

let confirmAction = null;

const keyPath = (key) => `/api/v1/keys/${encodeURIComponent(key.id)}`;

async function setStatus(key, status) {
  await send("PATCH", keyPath(key), { status });
  await load();
}

async function onAction(event, form) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const key = keys.find((k) => k.id === button.closest("tr").dataset.keyId);
  const action = button.dataset.action;
  if (action === "edit") form.open(key);
  else if (action === "enable") {
    try {
      await setStatus(key, "active");
    } catch (error) {
      showError($("page-error"), error, t);
    }
  } else if (action === "disable") {
    confirmThen("confirm.disableTitle", "confirm.disableBody", key, () => setStatus(key, "disabled"));
  } else if (action === "rotate") {
    confirmThen("confirm.rotateTitle", "confirm.rotateBody", key, async () => {
      const answer = await send("POST", `${keyPath(key)}/rotate`);
      await load();
      showSecret(answer);
    });
  } else if (action === "delete") {
    confirmThen("confirm.deleteTitle", "confirm.deleteBody", key, async () => {
      await send("DELETE", keyPath(key));
      await load();
    });
  }
}

async function start() {
  setUpLanguage();
  audit = new AuditPanel({
    box: $("audit-table").parentElement, body: $("audit-table").tBodies[0],
    message: $("audit-state"), more: $("audit-more"), count: $("audit-count"),
    scope: $("audit-scope"), reset: $("audit-reset"),
  }, {
    keyName: (id) => keys.find((k) => k.id === id)?.name ?? null,
    show: (target, error) => showError(target, error, t),
    zone,
  });
  audit.keyId = new URLSearchParams(location.search).get("audit_key");
  onLanguageChange(() => {
    render();
    audit.reload();
  });
  $("audit-reset").addEventListener("click", () => showAudit(null));
  $("keys-table").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-audit-key]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    showAudit(link.dataset.auditKey);
  });
  const form = new KeyForm({
    models: () => models,
    onSaved: async (answer, created) => {
      await load();
      if (created) showSecret(answer);
    },
  });
  $("create-key").addEventListener("click", () => form.open());
  $("keys-table").addEventListener("click", (event) => onAction(event, form));
  $("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
  $("confirm-yes").addEventListener("click", () => confirmAction?.());
  $("secret-copy").addEventListener("click", async () => {
    if (await copyText($("secret-value").value, $("secret-value"))) {
      $("secret-copy").textContent = t("secret.copied");
    }
  });
  // The secret leaves the page with its dialog (closed by the button or by Escape).
  const forgetSecret = () => { $("secret-value").value = ""; };
  $("secret-done").addEventListener("click", () => {
    forgetSecret();
    $("secret-dialog").close();
  });
  $("secret-dialog").addEventListener("close", forgetSecret);
  getJSON("/api/v1/usage/dimensions").then((d) => { models = d.models.map((m) => m.name); })
    .catch(() => { models = []; });
  await load();
  if (location.hash === "#audit") $("audit").scrollIntoView({ block: "start" });
  document.body.dataset.ready = "true";
}

start();
