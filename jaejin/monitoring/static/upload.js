// Uploads a CSV file or an Apple Health export from the patient's page with a progress bar:
// first the bytes sent (XMLHttpRequest upload progress), then the server reading the file
// (its status URL, polled twice a second) until it is done or failed.
(() => {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  const box = form.querySelector(".upload-progress");
  const bar = document.getElementById("upload-bar");
  const status = document.getElementById("upload-status");
  const button = form.querySelector("button[type=submit]");
  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? values[name] : whole));

  const show = (percent, template, values) => {
    bar.value = Math.max(0, Math.min(100, percent));
    status.textContent = fill(template, values);
  };

  const finish = (upload) => {
    button.disabled = false;
    if (upload.status === "done") {
      const counts = upload.counts || {};
      show(100, form.dataset.done, {
        created: counts.readings_created ?? 0, duplicate: counts.duplicate ?? 0,
        refused: counts.refused ?? 0,
      });
      form.dataset.finished = "done";
      // The charts are drawn on the server: offer the fresh page rather than jump to it.
      const again = document.createElement("a");
      again.href = window.location.pathname + window.location.search;
      again.id = "upload-show";
      again.textContent = form.dataset.show;
      status.append(" ", again);
    } else {
      show(bar.value, form.dataset.failed, {message: (upload.error && upload.error.message) || ""});
      form.dataset.finished = "failed";
    }
  };

  const poll = (url) => {
    fetch(url, {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}})
      .then((response) => response.json())
      .then((upload) => {
        if (upload.status === "done" || upload.status === "failed") { finish(upload); return; }
        const percent = Math.round((upload.progress || 0) * 100);
        show(percent, form.dataset.reading, {percent});
        setTimeout(() => poll(url), 500);
      })
      .catch(() => { show(bar.value, form.dataset.network, {}); button.disabled = false; });
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const token = data.get("csrf_token");
    data.delete("csrf_token");
    if (!data.get("kind")) data.delete("kind");
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("X-CSRF-Token", token);
    request.setRequestHeader("Accept", "application/json");
    box.hidden = false;
    button.disabled = true;
    delete form.dataset.finished;
    show(0, form.dataset.sending, {percent: 0});
    request.upload.addEventListener("progress", (progress) => {
      if (!progress.lengthComputable) return;
      const percent = Math.round((progress.loaded / progress.total) * 100);
      show(percent, form.dataset.sending, {percent});
    });
    request.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (error) { body = {}; }
      if (request.status === 202 && body.status_url) {
        show(0, form.dataset.reading, {percent: 0});
        poll(body.status_url);
      } else {
        finish({status: "failed", error: {message: body.detail || request.statusText}});
      }
    });
    request.addEventListener("error", () => { show(0, form.dataset.network, {}); button.disabled = false; });
    request.send(data);
  });
})();
