// Jaejin device check: before a video visit, see that the camera, microphone and speaker work and
// that the connection is fast enough, and say plainly what to fix. Standards-only.
//
// The page provides, on <main id="device-check">:
//   data-download-url     GET returning a body of test bytes (its length is measured, not trusted)
//   data-upload-url       POST accepting a body of test bytes
//   data-upload-bytes     optional, default 2000000
//   data-required-mbps    optional, default 5 (what a video visit needs)
//   data-continue-url     optional link to the waiting room
//   data-csrf-token       optional, sent as X-CSRF-Token with the upload
//   data-texts            JSON {key: translated text}; every word shown comes from here
// The measured throughput is kept in sessionStorage for the visit page's audio-only decision.

const THROUGHPUT_STORAGE_KEY = 'jaejin.throughputMbps';
const DEFAULT_UPLOAD_BYTES = 2000000;
const RANDOM_CHUNK_BYTES = 65536; // getRandomValues' limit per call

function parseJson(text, fallback) {
  if (!text) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function problemKind(error) {
  switch (error && error.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'missing';
    case 'NotReadableError':
    case 'AbortError':
      return 'in_use';
    default:
      return 'error';
  }
}

export function megabitsPerSecond(bytes, milliseconds) {
  if (!(milliseconds > 0)) return 0;
  return (bytes * 8) / (milliseconds / 1000) / 1e6;
}

class DeviceCheck {
  constructor(root) {
    this.root = root;
    const data = root.dataset;
    this.downloadUrl = data.downloadUrl || '';
    this.uploadUrl = data.uploadUrl || '';
    this.uploadBytes = Number.parseInt(data.uploadBytes || String(DEFAULT_UPLOAD_BYTES), 10);
    this.requiredMbps = Number.parseFloat(data.requiredMbps || '5');
    this.continueUrl = data.continueUrl || '';
    this.csrfToken = data.csrfToken || '';
    this.texts = parseJson(data.texts, {});
    this.stream = null;
    this.audioContext = null;
    this.meterFrame = null;
    this.results = {};
  }

  t(key, params = {}) {
    const template = Object.hasOwn(this.texts, key) ? this.texts[key] : key;
    return template.replace(/\{(\w+)\}/g, (match, name) =>
      Object.hasOwn(params, name) ? String(params[name]) : match);
  }

  section(name) {
    const heading = element('h2', { text: this.t(`${name}_heading`) });
    const message = element('p', { class: 'device-check-message', role: 'status' });
    const body = element('div', { class: 'device-check-body' });
    const section = element('section', {
      class: 'device-check-item', 'data-check': name, 'aria-live': 'polite',
    }, [heading, message, body]);
    return { section, message, body };
  }

  report(part, result, key, params) {
    part.section.dataset.result = result;
    part.message.textContent = this.t(key, params);
  }

  deviceSelect(kind, labelKey, devices, currentId, onChange) {
    const id = `device-check-${kind}`;
    const select = element('select', { id });
    devices.forEach((device, index) => {
      const option = element('option', {
        value: device.deviceId, text: device.label || `${this.t(labelKey)} ${index + 1}`,
      });
      option.selected = device.deviceId === currentId;
      select.append(option);
    });
    select.addEventListener('change', () => onChange(select.value));
    return element('p', {}, [element('label', { for: id, text: this.t(labelKey) }), ' ', select]);
  }

  render() {
    this.camera = this.section('camera');
    this.preview = element('video', { autoplay: true, playsinline: true });
    this.preview.muted = true;
    this.camera.body.append(this.preview);

    this.microphone = this.section('microphone');
    this.meter = element('meter', {
      class: 'device-check-meter', min: 0, max: 1, value: 0,
      'aria-label': this.t('microphone_level_label'),
    });
    this.microphone.body.append(this.meter);

    this.speaker = this.section('speaker');
    const play = element('button', { type: 'button', text: this.t('speaker_play') });
    play.addEventListener('click', () => this.playTone());
    this.speaker.body.append(play);
    this.report(this.speaker, 'pending', 'speaker_hint');

    this.connection = this.section('connection');

    this.summary = element('p', { class: 'device-check-summary', role: 'status' });
    const again = element('button', { type: 'button', text: this.t('check_again') });
    again.addEventListener('click', () => this.run());
    const actions = [again];
    if (this.continueUrl) {
      actions.push(element('a', { href: this.continueUrl, text: this.t('continue') }));
    }
    this.root.replaceChildren(this.camera.section, this.microphone.section, this.speaker.section,
      this.connection.section, this.summary,
      element('p', { class: 'device-check-actions' }, actions));
  }

  stopMedia() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    if (this.meterFrame) cancelAnimationFrame(this.meterFrame);
    this.meterFrame = null;
  }

  async checkMedia(constraints = { audio: true, video: true }) {
    this.stopMedia();
    const devices = navigator.mediaDevices;
    if (!devices || typeof devices.getUserMedia !== 'function') {
      this.results.camera = 'error';
      this.results.microphone = 'error';
      this.report(this.camera, 'problem', 'camera_error');
      this.report(this.microphone, 'problem', 'microphone_error');
      return;
    }
    const stream = new MediaStream();
    const tryKind = async (kind) => {
      try {
        const got = await devices.getUserMedia({ [kind]: constraints[kind] });
        for (const track of got.getTracks()) stream.addTrack(track);
        return 'ok';
      } catch (error) {
        return problemKind(error);
      }
    };
    // One prompt for both when both work; separately otherwise, to tell which one failed.
    try {
      const both = await devices.getUserMedia(constraints);
      for (const track of both.getTracks()) stream.addTrack(track);
      this.results.camera = 'ok';
      this.results.microphone = 'ok';
    } catch {
      this.results.camera = await tryKind('video');
      this.results.microphone = await tryKind('audio');
    }
    this.stream = stream;

    const cameraOk = this.results.camera === 'ok';
    this.report(this.camera, cameraOk ? 'ok' : 'problem', `camera_${this.results.camera}`);
    this.preview.srcObject = cameraOk ? stream : null;
    if (cameraOk) this.preview.play().catch(() => {});
    const microphoneOk = this.results.microphone === 'ok';
    this.report(this.microphone, microphoneOk ? 'ok' : 'problem',
      `microphone_${this.results.microphone}`);
    if (microphoneOk) this.watchLevel(stream);
    await this.listDevices(stream);
  }

  async listDevices(stream) {
    if (typeof navigator.mediaDevices.enumerateDevices !== 'function') return;
    const all = await navigator.mediaDevices.enumerateDevices();
    const currentOf = (kind) => {
      const track = kind === 'videoinput' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
      return track && track.getSettings ? track.getSettings().deviceId : '';
    };
    const replace = (part, node) => {
      const old = part.body.querySelector('p');
      if (old) old.remove();
      part.body.prepend(node);
    };
    const cameras = all.filter((device) => device.kind === 'videoinput');
    if (cameras.length > 1) {
      replace(this.camera, this.deviceSelect('camera', 'camera_select_label', cameras,
        currentOf('videoinput'), (deviceId) => this.checkMedia({
          video: { deviceId: { exact: deviceId } }, audio: true,
        })));
    }
    const microphones = all.filter((device) => device.kind === 'audioinput');
    if (microphones.length > 1) {
      replace(this.microphone, this.deviceSelect('microphone', 'microphone_select_label',
        microphones, currentOf('audioinput'), (deviceId) => this.checkMedia({
          video: true, audio: { deviceId: { exact: deviceId } },
        })));
    }
    const speakers = all.filter((device) => device.kind === 'audiooutput');
    if (speakers.length > 1 && typeof AudioContext !== 'undefined'
        && typeof AudioContext.prototype.setSinkId === 'function') {
      replace(this.speaker, this.deviceSelect('speaker', 'speaker_select_label', speakers, '',
        (deviceId) => { this.speakerId = deviceId; }));
    }
  }

  watchLevel(stream) {
    const context = this.ensureAudioContext();
    if (!context) return;
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) sum += sample * sample;
      this.meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      this.meterFrame = requestAnimationFrame(tick);
    };
    tick();
  }

  ensureAudioContext() {
    if (typeof AudioContext === 'undefined') return null;
    if (!this.audioContext) this.audioContext = new AudioContext();
    return this.audioContext;
  }

  async playTone() {
    const context = this.ensureAudioContext();
    if (!context) return;
    if (context.state === 'suspended') await context.resume();
    if (this.speakerId && typeof context.setSinkId === 'function') {
      await context.setSinkId(this.speakerId).catch(() => {});
    }
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.frequency.value = 440;
    gain.gain.setValueAtTime(0.0001, context.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.3, context.currentTime + 0.05);
    gain.gain.exponentialRampToValueAtTime(0.0001, context.currentTime + 1.2);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start();
    oscillator.stop(context.currentTime + 1.25);
    this.report(this.speaker, 'pending', 'speaker_question');
  }

  async measureDownload() {
    const started = performance.now();
    const response = await fetch(this.downloadUrl, { cache: 'no-store' });
    if (!response.ok) throw new Error(`download answered ${response.status}`);
    const body = await response.arrayBuffer();
    return megabitsPerSecond(body.byteLength, performance.now() - started);
  }

  async measureUpload() {
    const payload = new Uint8Array(this.uploadBytes);
    // Random bytes, so no compression on the way inflates the figure.
    for (let offset = 0; offset < payload.length; offset += RANDOM_CHUNK_BYTES) {
      crypto.getRandomValues(payload.subarray(offset, offset + RANDOM_CHUNK_BYTES));
    }
    const started = performance.now();
    const response = await fetch(this.uploadUrl, {
      method: 'POST', body: payload, cache: 'no-store',
      headers: this.csrfToken
        ? { 'Content-Type': 'application/octet-stream', 'X-CSRF-Token': this.csrfToken }
        : { 'Content-Type': 'application/octet-stream' },
    });
    if (!response.ok) throw new Error(`upload answered ${response.status}`);
    return megabitsPerSecond(payload.length, performance.now() - started);
  }

  async checkConnection() {
    this.report(this.connection, 'pending', 'connection_measuring');
    try {
      const download = await this.measureDownload();
      const upload = this.uploadUrl ? await this.measureUpload() : download;
      const slowest = Math.min(download, upload);
      this.results.downloadMbps = download;
      this.results.uploadMbps = upload;
      this.results.enoughForVideo = slowest >= this.requiredMbps;
      window.sessionStorage.setItem(THROUGHPUT_STORAGE_KEY, String(slowest));
      const figures = {
        download: download.toFixed(1), upload: upload.toFixed(1), required: this.requiredMbps,
      };
      const verdict = this.results.enoughForVideo ? 'connection_ok' : 'connection_low';
      this.report(this.connection, this.results.enoughForVideo ? 'ok' : 'problem', verdict,
        figures);
      this.connection.message.textContent = `${this.t('connection_result', figures)} `
        + this.t(verdict, figures);
    } catch {
      this.results.enoughForVideo = false;
      this.report(this.connection, 'problem', 'connection_failed');
    }
  }

  async run() {
    this.results = {};
    this.summary.textContent = '';
    await this.checkMedia();
    await this.checkConnection();
    const ready = this.results.camera === 'ok' && this.results.microphone === 'ok'
      && this.results.enoughForVideo;
    this.results.ready = Boolean(ready);
    this.summary.textContent = this.t(ready ? 'summary_ready' : 'summary_problems');
    return { ...this.results };
  }
}

const root = document.getElementById('device-check');
if (root) {
  const check = new DeviceCheck(root);
  check.render();
  const finished = check.run();
  window.jaejinDeviceCheck = {
    finished,
    run: () => check.run(),
    playTone: () => check.playTone(),
  };
}
