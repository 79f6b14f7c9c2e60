// Jaejin clinician's visit controls: the panel's buttons and the note forms call the visit's
// JSON API (/api/v1/visits/...), then the panel is fetched again. Nothing reloads the page that
// holds the call. Every word shown comes from the page (data attributes or the API's problem
// `detail`, already in the user's language).
//
// Buttons: data-api (URL), data-method (default POST), data-body (JSON), data-mode-select (id
// of a <select> whose value is sent as {mode}), data-confirm (a question), data-reload (reload
// the page afterwards). Forms: #visit-note (PUT the note), #next-appointment (book).

(function visitPanel() {
  const panel = document.getElementById('visit-panel');

  function csrfToken() {
    const holder = document.querySelector('[data-csrf-token]');
    return holder ? holder.dataset.csrfToken : '';
  }

  async function call(url, method, body) {
    const response = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/json',
        'X-CSRF-Token': csrfToken(),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    return { ok: response.ok, status: response.status, payload };
  }

  function problemText(result, fallback) {
    if (result.payload && typeof result.payload.detail === 'string') {
      // POLICY_DENIED's reasons are objects whose messages the detail already states; the
      // lifecycle's own refusals list plain sentences.
      const reasons = Array.isArray(result.payload.reasons) ? result.payload.reasons : [];
      return [result.payload.detail, ...reasons.filter((r) => typeof r === 'string')].join(' ');
    }
    return fallback;
  }

  async function refreshPanel() {
    if (!panel) return;
    const response = await fetch(panel.dataset.panelUrl, {
      credentials: 'same-origin', headers: { Accept: 'text/html' }, cache: 'no-store',
    });
    if (response.ok) panel.innerHTML = await response.text();
  }

  function showPanelMessage(text) {
    const message = panel && panel.querySelector('.visit-panel-message');
    if (!message) return;
    message.textContent = text;
    message.hidden = !text;
  }

  async function press(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    let body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    if (button.dataset.modeSelect) {
      const select = document.getElementById(button.dataset.modeSelect);
      body = { mode: select ? select.value : 'video' };
    }
    button.disabled = true;
    const holder = button.closest('[data-failed]');
    const fallback = holder ? holder.dataset.failed : '';
    let failure = '';
    try {
      const result = await call(button.dataset.api, button.dataset.method || 'POST', body);
      if (!result.ok) failure = problemText(result, fallback);
    } catch {
      failure = fallback;
    }
    if (button.dataset.reload && !failure) {
      window.location.reload();
      return;
    }
    await refreshPanel();
    button.disabled = false;
    if (failure) {
      if (button.closest('#visit-panel')) showPanelMessage(failure);
      else {
        const form = button.closest('form');
        const message = form && form.querySelector('[role="status"]');
        if (message) message.textContent = failure;
      }
    }
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-api]');
    if (!button) return;
    event.preventDefault();
    press(button);
  });

  const note = document.getElementById('visit-note');
  if (note) {
    note.addEventListener('submit', async (event) => {
      event.preventDefault();
      const value = (name) => note.elements[name].value;
      const days = value('follow_up_interval_days');
      const body = {
        subjective: value('subjective'),
        objective: value('objective'),
        assessment: value('assessment'),
        plan: value('plan'),
        condition_codes: value('condition_codes').split(/[\s,;]+/).filter(Boolean),
        follow_up_interval_days: days ? Number.parseInt(days, 10) : null,
      };
      const message = note.querySelector('.visit-note-message');
      const result = await call(note.dataset.api, note.dataset.method || 'PUT', body);
      message.textContent = result.ok ? note.dataset.saved : problemText(result, note.dataset.failed);
      if (result.ok) refreshPanel();
    });

    const search = document.getElementById('code-search');
    const options = document.getElementById('code-options');
    let pending = null;
    if (search && options) {
      search.addEventListener('input', () => {
        window.clearTimeout(pending);
        const query = search.value.trim();
        const picked = [...options.options].find((option) => option.value === query);
        if (picked) {
          const codes = note.elements.condition_codes;
          const code = query.split(' ')[0];
          const existing = codes.value.split(/[\s,;]+/).filter(Boolean);
          if (!existing.includes(code)) codes.value = [...existing, code].join(', ');
          search.value = '';
          return;
        }
        if (!query) return;
        pending = window.setTimeout(async () => {
          const url = `${search.dataset.searchUrl}?q=${encodeURIComponent(query)}`;
          const result = await call(url, 'GET');
          if (!result.ok || !Array.isArray(result.payload)) return;
          options.replaceChildren(...result.payload.map((entry) => {
            const option = document.createElement('option');
            option.value = `${entry.code} ${entry.name}`;
            return option;
          }));
        }, 200);
      });
    }
  }

  // The prescription section (htmx): a refusal (409, 422) says why in the section
  // it replaces, so let htmx swap it in like a success.
  document.body.addEventListener('htmx:beforeSwap', (event) => {
    const target = event.detail.target;
    if ([409, 422].includes(event.detail.xhr.status) && target && target.id === 'visit-prescriptions') {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  const next = document.getElementById('next-appointment');
  if (next) {
    const days = Number.parseInt(next.dataset.followUpDays || '', 10);
    if (days > 0) {
      const suggested = new Date(Date.now() + days * 86400000);
      next.elements[0].value = suggested.toISOString().slice(0, 10);
    }
    next.addEventListener('submit', async (event) => {
      event.preventDefault();
      const day = document.getElementById('next-date').value;
      const time = document.getElementById('next-time').value;
      const start = new Date(`${day}T${time}`);
      const message = next.querySelector('.visit-next-message');
      const result = await call(next.dataset.api, 'POST', {
        start: start.toISOString(), mode: document.getElementById('next-mode').value,
      });
      message.textContent = result.ok ? next.dataset.booked
        : problemText(result, next.dataset.failed);
    });
  }
}());
