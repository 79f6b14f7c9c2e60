// Sends a wound photo with htmx and shows its progress like the file upload does: the bytes
// sent (htmx's XMLHttpRequest upload progress), then "checking" while the server decodes and
// stores it. The answer is the photo section itself (new thumbnail or the reason it was refused).
// Without JavaScript the form posts normally and the page comes back.
(() => {
  "use strict";
  const parts = (form) => ({
    box: form.querySelector(".upload-progress"),
    bar: form.querySelector("progress"),
    status: form.querySelector(".photo-status"),
    button: form.querySelector("button[type=submit]"),
  });
  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? values[name] : whole));
  const formOf = (event) => {
    const element = event.detail && event.detail.elt;
    return element && element.matches && element.matches("form[data-photo-form]") ? element : null;
  };

  document.body.addEventListener("htmx:beforeRequest", (event) => {
    const form = formOf(event);
    if (!form) return;
    const {box, bar, status, button} = parts(form);
    box.hidden = false;
    bar.value = 0;
    status.textContent = fill(form.dataset.sending, {percent: 0});
    button.disabled = true;
  });
  document.body.addEventListener("htmx:xhr:progress", (event) => {
    const form = formOf(event);
    if (!form || !event.detail.lengthComputable) return;
    const {bar, status} = parts(form);
    const percent = Math.round((event.detail.loaded / event.detail.total) * 100);
    bar.value = percent;
    status.textContent = percent >= 100 ? form.dataset.checking : fill(form.dataset.sending, {percent});
  });
  // A refused photo answers 4xx with the section explaining why: show it. A body too large for
  // the server answers before the page is involved (JSON): say so here.
  document.body.addEventListener("htmx:beforeSwap", (event) => {
    const form = formOf(event);
    if (!form) return;
    const xhr = event.detail.xhr;
    const html = (xhr.getResponseHeader("Content-Type") || "").startsWith("text/html");
    if (xhr.status >= 400 && xhr.status < 500 && html) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (xhr.status >= 400) {
      const {status, button} = parts(form);
      status.textContent = xhr.status === 413 ? form.dataset.tooLarge : form.dataset.network;
      button.disabled = false;
    }
  });
  document.body.addEventListener("htmx:sendError", (event) => {
    const form = formOf(event);
    if (!form) return;
    const {status, button} = parts(form);
    status.textContent = form.dataset.network;
    button.disabled = false;
  });
})();
