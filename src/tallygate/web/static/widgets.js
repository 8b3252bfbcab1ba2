// Small pieces shared by the pages.

/** Close a <details> drop-down when the user clicks elsewhere or presses Escape. */
export function closeOnOutsideClick(details) {
  document.addEventListener("click", (event) => {
    if (details.open && !details.contains(event.target)) details.open = false;
  });
  details.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && details.open) {
      details.open = false;
      details.querySelector("summary").focus();
    }
  });
}

/** Every IANA zone the browser knows, UTC and the browser's own zone included. */
export function timeZones() {
  const own = Intl.DateTimeFormat().resolvedOptions().timeZone;
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    // an older browser: offer the common zones
    zones = ["Asia/Shanghai", "Asia/Tokyo", "Asia/Kolkata", "Europe/London", "Europe/Berlin",
      "America/New_York", "America/Los_Angeles"];
  }
  return [...new Set(["UTC", own, ...zones])].filter(Boolean).sort();
}

/** Copy text to the clipboard; falls back to selecting it in an input over plain HTTP. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    input.select();
    return document.execCommand("copy");
  }
}
