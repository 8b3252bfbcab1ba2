// The page language: English or Simplified Chinese, remembered in localStorage.
// Elements carry data-i18n="key" (text), data-i18n-title, data-i18n-aria-label.

import { STRINGS } from "./strings.js";

const STORAGE_KEY = "tallygate.lang";
const LANGS = ["en", "zh"];
const listeners = [];
let chosenHere = null; // the choice made on this page, should localStorage be blocked

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage blocked: fall back to the browser's language
  }
}

export function lang() {
  const chosen = chosenHere ?? stored();
  if (LANGS.includes(chosen)) return chosen;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

/** The BCP 47 locale for number and date formatting. */
export function locale() {
  return lang() === "zh" ? "zh-CN" : "en-US";
}

export function t(key, vars = {}) {
  const text = STRINGS[lang()][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function translatePage(root = document) {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  const titleKey = document.body.dataset.titleKey;
  if (titleKey) document.title = `${t(titleKey)} · tallygate`;
}

/** Calls fn after every language switch (to re-render what JS wrote). */
export function onLanguageChange(fn) {
  listeners.push(fn);
}

function switchLanguage() {
  const next = lang() === "zh" ? "en" : "zh";
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // not remembered, but still switched for this page view
  }
  chosenHere = next;
  translatePage();
  for (const fn of listeners) fn();
}

export function setUpLanguage() {
  const button = document.getElementById("lang-switch");
  if (button) button.addEventListener("click", switchLanguage);
  translatePage();
}
