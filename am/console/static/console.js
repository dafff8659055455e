// geniam console: live updates. The server sends "change" on /events when
// the database moved; the page fetches itself again and swaps every element
// marked data-live (forms, and what the reader is typing, stay as they are).
"use strict";
(function () {
  if (!window.EventSource || !document.querySelector("[data-live]")) return;
  const dot = document.getElementById("live");
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      for (const fresh of doc.querySelectorAll("[data-live][id]")) {
        const old = document.getElementById(fresh.id);
        if (old && old.innerHTML !== fresh.innerHTML) old.replaceWith(document.importNode(fresh, true));
      }
      const up = document.getElementById("updated");
      if (up) up.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const es = new EventSource("/events");
  es.addEventListener("change", refresh);
  es.onopen = function () { if (dot) dot.className = "on"; };
  es.onerror = function () { if (dot) dot.className = "off"; };
})();
