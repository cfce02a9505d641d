// pkiq dashboard: small progressive enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filters apply as soon as a choice changes (the Filter button stays for keyboards).
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    for (const select of form.querySelectorAll("select")) {
      select.addEventListener("change", () => form.submit());
    }
  }
  // A rejection asks once: it cannot be undone.
  for (const form of document.querySelectorAll("form.reject-form")) {
    form.addEventListener("submit", (event) => {
      const label = form.querySelector("button").getAttribute("aria-label");
      if (!window.confirm(label + "? This cannot be undone.")) event.preventDefault();
    });
  }
});
