// The console's only script, written here (no library): live refresh of the recent-mail
// table, and a confirmation before a destructive form is sent.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-refresh]");
  if (live) {
    setInterval(async () => {
      const answer = await fetch(live.dataset.refresh, { credentials: "same-origin" });
      if (answer.ok) live.innerHTML = await answer.text();
    }, 3000);
  }
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
