// The create / edit dialog of an API key. A new key is POSTed whole; an edit PATCHes only the
// fields that changed (a blank limit sends null, which clears it).

import { send, showError } from "./api.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const LIMITS = ["rpm_limit", "tpm_limit", "quota_tokens", "max_concurrency"];

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function list(text, separator) {
  const items = text.split(separator).map((s) => s.trim()).filter(Boolean);
  return items.length ? items : null;
}

/** The request body the form describes, in the API's field names. */
function formBody(form) {
  const value = (name) => form.elements[name].value.trim();
  const body = {
    name: value("name"),
    internal: form.elements.internal.checked,
    owner: value("owner") || null,
    tags: list(value("tags"), ","),
    budget: value("budget") || null,
    quota_period: value("quota_period"),
    expires_at: value("expires_at") ? new Date(value("expires_at")).toISOString() : null,
    allowed_models: list([...form.querySelectorAll("#allowed-models input:checked")]
      .map((input) => input.value).join("\n"), "\n"),
    allowed_ips: list(value("allowed_ips"), /[\s,]+/),
  };
  for (const name of LIMITS) body[name] = value(name) === "" ? null : Number(value(name));
  return body;
}

/** The body a key's current fields would give, to find what an edit changed. */
function keyBody(key) {
  return {
    name: key.name, internal: key.internal, owner: key.owner, tags: key.tags.length ? key.tags : null,
    budget: key.budget, quota_period: key.quota_period,
    // to the minute, as the form shows it, so an untouched expiry is not sent
    expires_at: key.expires_at ? new Date(localInput(key.expires_at)).toISOString() : null,
    allowed_models: key.allowed_models, allowed_ips: key.allowed_ips,
    rpm_limit: key.rpm_limit, tpm_limit: key.tpm_limit, quota_tokens: key.quota_tokens,
    max_concurrency: key.max_concurrency,
  };
}

export class KeyForm {
  /** onSaved(answer, created): after a successful POST (created) or PATCH. */
  constructor({ models, onSaved }) {
    this.dialog = $("key-dialog");
    this.form = $("key-form");
    this.error = $("key-form-error");
    this.models = models;
    this.onSaved = onSaved;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("key-form-cancel").addEventListener("click", () => this.dialog.close());
  }

  open(key = null) {
    this.key = key;
    this.form.reset();
    this.error.hidden = true;
    $("key-form-title").textContent = key ? t("form.editTitle", { name: key.name })
      : t("form.createTitle");
    const el = this.form.elements;
    if (key) {
      el.name.value = key.name;
      el.owner.value = key.owner ?? "";
      el.tags.value = key.tags.join(", ");
      el.internal.checked = key.internal;
      for (const name of LIMITS) el[name].value = key[name] ?? "";
      el.budget.value = key.budget ?? "";
      el.quota_period.value = key.quota_period;
      el.expires_at.value = localInput(key.expires_at);
      el.allowed_ips.value = (key.allowed_ips ?? []).join("\n");
    }
    this.fillModels(key?.allowed_models ?? []);
    this.dialog.showModal();
    el.name.focus();
  }

  fillModels(allowed) {
    const names = [...new Set([...this.models(), ...allowed])];
    $("allowed-models").replaceChildren(...names.map((name) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = name;
      input.checked = allowed.includes(name);
      label.append(input, ` ${name}`);
      return label;
    }));
  }

  async save() {
    const body = formBody(this.form);
    const button = $("key-form-save");
    button.disabled = true;
    try {
      if (this.key) {
        const before = keyBody(this.key);
        const changed = Object.fromEntries(Object.entries(body)
          .filter(([name, value]) => JSON.stringify(value) !== JSON.stringify(before[name])));
        const answer = await send("PATCH", `/api/v1/keys/${encodeURIComponent(this.key.id)}`, changed);
        this.dialog.close();
        this.onSaved(answer, false);
      } else {
        const answer = await send("POST", "/api/v1/keys", body);
        this.dialog.close();
        this.onSaved(answer, true);
      }
    } catch (error) {
      showError(this.error, error, t);
    } finally {
      button.disabled = false;
    }
  }
}
