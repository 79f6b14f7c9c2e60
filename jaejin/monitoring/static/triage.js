// Keeps the open triage list current. The server pushes a "triage" event (server-sent events)
// when a reading, an alert or its state changes at the clinician's institution; the list is then
// fetched again as HTML, so ranking and wording stay server-side. EventSource reconnects by itself.
(() => {
  "use strict";
  const list = document.getElementById("triage-list");
  const status = document.getElementById("triage-live-status");
  if (!list || !("EventSource" in window)) return;
  let waiting = null;
  let again = false;

  const say = (key) => {
    if (status && status.dataset[key]) status.textContent = status.dataset[key];
    if (status) status.dataset.state = key;
  };

  const reload = async () => {
    try {
      const response = await fetch(list.dataset.fragment, {
        headers: {"HX-Request": "true"}, credentials: "same-origin", cache: "no-store",
      });
      if (response.ok) {
        list.innerHTML = await response.text();
        list.dataset.version = String(Number(list.dataset.version || "0") + 1);
        if (window.htmx) window.htmx.process(list);
      }
    } finally {
      waiting = null;
      if (again) { again = false; schedule(); }
    }
  };

  // Events arriving together (a blood-pressure panel is two readings) cause one reload.
  const schedule = () => {
    if (waiting) { again = true; return; }
    waiting = setTimeout(reload, 80);
  };

  const source = new EventSource(list.dataset.source);
  // Whatever happened while the stream was not yet (or no longer) open is fetched at once.
  source.addEventListener("open", () => { say("live"); schedule(); });
  source.addEventListener("triage", schedule);
  source.addEventListener("error", () => say("reconnecting"));
  // A refused step (someone else resolved the alert first) still shows the fresh list and why.
  document.body.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.xhr.status === 409) { event.detail.shouldSwap = true; event.detail.isError = false; }
  });
  window.addEventListener("pagehide", () => source.close());
})();
