// Jaejin video visit: WebRTC full mesh between up to four participants, signalled over the
// visit's authenticated WebSocket. Standards-only (no vendor prefixes, no adapter library), so it
// runs in Chromium, Firefox and Safari alike.
//
// The page provides everything through data attributes on <main id="visit">:
//   data-ws-url                 WebSocket URL of the visit room (absolute, or a path on this site)
//   data-ice-servers            JSON array of RTCIceServer dictionaries (STUN, TURN credentials)
//   data-self-id                this participant's id; data-role its role
//   data-upload-url             where a shared file is POSTed (multipart field "file")
//   data-csrf-token             optional, sent as X-CSRF-Token with the upload
//   data-participants           optional JSON {participantId: display name}
//   data-texts                  JSON {key: translated text}; every word shown comes from here
//   data-audio-only-below-mbps  optional, default 1: start audio-only when the throughput the
//                               device check measured (or data-measured-mbps) is below this
//   data-measured-mbps          optional throughput measured by the device check
// During the call, video is paused (audio continues) when a connection's estimated outgoing
// bandwidth stays below CALL_VIDEO_FLOOR_MBPS; the participant can turn the camera back on.
// Texts may contain {placeholders}; a missing key shows the key itself, never English.

const ROLE_KEYS = {
  clinician: 'role_clinician',
  patient: 'role_patient',
  interpreter: 'role_interpreter',
  local_physician: 'role_local_physician',
};
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
const KEEPALIVE_INTERVAL_MS = 15000;
const KEEPALIVE_TIMEOUT_MS = 10000;
const DISCONNECTED_GRACE_MS = 3000;
const BANDWIDTH_CHECK_INTERVAL_MS = 4000;
const LOW_BANDWIDTH_SAMPLES = 3;
// Below about 150 kbit/s per connection video is a slideshow that starves the audio.
const CALL_VIDEO_FLOOR_MBPS = 0.15;
const THROUGHPUT_STORAGE_KEY = 'jaejin.throughputMbps';

function parseJson(text, fallback) {
  if (!text) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}

function toWebSocketUrl(value) {
  const url = new URL(value, window.location.href);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  return url.toString();
}

function randomSession() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') {
    return window.crypto.randomUUID();
  }
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function safeLink(value) {
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.toString() : null;
  } catch {
    return null;
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

class Visit {
  constructor(root) {
    this.root = root;
    const data = root.dataset;
    this.wsUrl = toWebSocketUrl(data.wsUrl);
    this.iceServers = parseJson(data.iceServers, []);
    this.selfId = data.selfId;
    this.role = data.role;
    this.uploadUrl = data.uploadUrl || '';
    this.csrfToken = data.csrfToken || '';
    this.names = parseJson(data.participants, {});
    this.texts = parseJson(data.texts, {});
    this.audioOnlyBelowMbps = Number.parseFloat(data.audioOnlyBelowMbps || '1');
    const stored = window.sessionStorage.getItem(THROUGHPUT_STORAGE_KEY);
    this.measuredMbps = Number.parseFloat(data.measuredMbps || stored || 'NaN');

    this.session = randomSession();
    this.peers = new Map(); // id -> {pc, polite, makingOffer, ignoreOffer, ...}
    this.pcs = new Map(); // id -> RTCPeerConnection, exposed for tests and diagnostics
    this.members = new Map(); // id -> presence participant
    this.localStream = new MediaStream();
    this.cameraTrack = null;
    this.screenTrack = null;
    this.media = { audio_muted: false, camera_off: false, screen_sharing: false };
    this.videoSuppressedForBandwidth = false;
    this.lowBandwidthSamples = 0;

    this.socket = null;
    this.socketOpens = 0;
    this.reconnectAttempt = 0;
    this.reconnectTimer = null;
    this.keepaliveTimer = null;
    this.keepaliveDeadline = null;
    this.stopped = false;
  }

  t(key, params = {}) {
    const template = Object.hasOwn(this.texts, key) ? this.texts[key] : key;
    return template.replace(/\{(\w+)\}/g, (match, name) =>
      Object.hasOwn(params, name) ? String(params[name]) : match);
  }

  nameOf(id, role) {
    const name = this.names[id] || id;
    const roleText = role && ROLE_KEYS[role] ? this.t(ROLE_KEYS[role]) : '';
    return roleText ? `${name} (${roleText})` : name;
  }

  // ------------------------------------------------------------------ page

  render() {
    this.status = element('p', { class: 'visit-status', role: 'status', 'aria-live': 'polite' });
    this.notice = element('p', { class: 'visit-notice', role: 'alert', hidden: true });
    this.tiles = element('section', { class: 'visit-tiles', 'aria-label': this.t('tiles_label') });
    this.soundButton = element('button', {
      type: 'button', class: 'visit-enable-sound', hidden: true, text: this.t('enable_sound'),
    });
    this.soundButton.addEventListener('click', () => this.enableSound());

    this.muteButton = this.toggleButton('mute', this.t('mute'), () => this.toggleMute());
    this.cameraButton = this.toggleButton('camera', this.t('camera_off'), () => this.toggleCamera());
    const controls = [this.muteButton, this.cameraButton];
    if (this.role === 'clinician' && navigator.mediaDevices
        && typeof navigator.mediaDevices.getDisplayMedia === 'function') {
      this.screenButton = this.toggleButton('screen', this.t('share_screen'),
        () => this.toggleScreenShare());
      controls.push(this.screenButton);
    }
    this.leaveButton = element('button', {
      type: 'button', class: 'visit-leave', 'data-action': 'leave', text: this.t('leave'),
    });
    this.leaveButton.addEventListener('click', () => this.leave());
    controls.push(this.leaveButton);
    const toolbar = element('div', {
      class: 'visit-controls', role: 'toolbar', 'aria-label': this.t('controls_label'),
    }, controls);

    this.chatLog = element('ol', { class: 'visit-chat-log', role: 'log', 'aria-live': 'polite' });
    this.chatInput = element('input', {
      id: 'visit-chat-input', type: 'text', maxlength: 4000, autocomplete: 'off',
    });
    const chatForm = element('form', { class: 'visit-chat-form' }, [
      element('label', { for: 'visit-chat-input', text: this.t('chat_label') }),
      this.chatInput,
      element('button', { type: 'submit', text: this.t('chat_send') }),
    ]);
    chatForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.sendChat();
    });
    const panel = [element('h2', { text: this.t('chat_heading') }), this.chatLog, chatForm];
    if (this.uploadUrl) {
      this.fileInput = element('input', { id: 'visit-file-input', type: 'file' });
      const fileForm = element('form', { class: 'visit-file-form' }, [
        element('label', { for: 'visit-file-input', text: this.t('file_label') }),
        this.fileInput,
        element('button', { type: 'submit', text: this.t('file_send') }),
      ]);
      fileForm.addEventListener('submit', (event) => {
        event.preventDefault();
        this.shareFile();
      });
      panel.push(fileForm);
    }
    const chat = element('section', { class: 'visit-chat', 'aria-label': this.t('chat_heading') },
      panel);

    this.root.replaceChildren(this.status, this.notice, this.soundButton, this.tiles, toolbar,
      chat);
    this.selfTile = this.tile(this.selfId, this.nameOf(this.selfId, this.role) + ' · '
      + this.t('you'), true);
  }

  toggleButton(action, label, onClick) {
    const button = element('button', {
      type: 'button', 'data-action': action, 'aria-pressed': 'false', text: label,
    });
    button.addEventListener('click', onClick);
    return button;
  }

  setPressed(button, pressed) {
    if (button) button.setAttribute('aria-pressed', pressed ? 'true' : 'false');
  }

  setStatus(key, params) {
    this.status.textContent = this.t(key, params);
  }

  showNotice(key, params) {
    this.notice.textContent = this.t(key, params);
    this.notice.hidden = false;
  }

  tile(id, label, isSelf = false) {
    const video = element('video', { autoplay: true, playsinline: true });
    video.muted = isSelf;
    const state = element('span', { class: 'tile-state' });
    const caption = element('figcaption', {}, [element('span', { text: label }), state]);
    const figure = element('figure', { class: isSelf ? 'tile tile-self' : 'tile',
      'data-peer-id': id }, [video, caption]);
    this.tiles.append(figure);
    this.tiles.dataset.count = String(this.tiles.children.length);
    return { figure, video, state };
  }

  removeTile(tile) {
    tile.figure.remove();
    this.tiles.dataset.count = String(this.tiles.children.length);
  }

  showMediaState(tile, media) {
    const words = [];
    if (media.audio_muted) words.push(this.t('muted_indicator'));
    if (media.camera_off) words.push(this.t('camera_off_indicator'));
    if (media.screen_sharing) words.push(this.t('sharing_screen_indicator'));
    tile.state.textContent = words.join(' · ');
  }

  async play(video) {
    try {
      await video.play();
    } catch {
      // Autoplay with sound needs a gesture in some browsers: play muted, offer a sound button.
      video.muted = true;
      this.soundButton.hidden = false;
      try {
        await video.play();
      } catch {
        // The element will start when the user presses the sound button.
      }
    }
  }

  enableSound() {
    for (const peer of this.peers.values()) {
      peer.tile.video.muted = false;
      peer.tile.video.play().catch(() => {});
    }
    this.soundButton.hidden = true;
  }

  // ------------------------------------------------------------------ local media

  async acquireMedia() {
    const devices = navigator.mediaDevices;
    if (!devices || typeof devices.getUserMedia !== 'function') {
      this.showNotice('notice_no_media_support');
      return;
    }
    let stream = null;
    try {
      stream = await devices.getUserMedia({
        audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 } },
      });
    } catch (error) {
      try {
        stream = await devices.getUserMedia({ audio: true });
        this.showNotice('notice_audio_only_camera');
      } catch {
        this.showNotice(error && error.name === 'NotAllowedError'
          ? 'notice_permission_denied' : 'notice_no_devices');
      }
    }
    if (stream) {
      for (const track of stream.getTracks()) this.localStream.addTrack(track);
      this.cameraTrack = stream.getVideoTracks()[0] || null;
    }
    this.selfTile.video.srcObject = this.localStream;
    this.play(this.selfTile.video);
    if (!this.cameraTrack) {
      this.cameraButton.disabled = true;
      this.media.camera_off = true;
    }
    if (!this.localStream.getAudioTracks().length) {
      this.muteButton.disabled = true;
      this.media.audio_muted = true;
    }
    if (this.cameraTrack && this.measuredMbps < this.audioOnlyBelowMbps) {
      this.suppressVideoForBandwidth();
    }
    this.showMediaState(this.selfTile, this.media);
  }

  sendingVideoTrack() {
    if (this.screenTrack) return this.screenTrack;
    if (this.videoSuppressedForBandwidth || this.media.camera_off) return null;
    return this.cameraTrack;
  }

  async applyVideoTrack() {
    const track = this.sendingVideoTrack();
    await Promise.all([...this.peers.values()].map((peer) => this.setPeerVideo(peer, track)));
  }

  async setPeerVideo(peer, track) {
    const transceiver = peer.videoTransceiver;
    if (!transceiver) return;
    if (track && transceiver.direction === 'recvonly') {
      // Starting to send where we only received: a renegotiation (handled as any other).
      transceiver.direction = 'sendrecv';
    }
    await transceiver.sender.replaceTrack(track);
  }

  toggleMute() {
    const track = this.localStream.getAudioTracks()[0];
    if (!track) return;
    this.media.audio_muted = !this.media.audio_muted;
    track.enabled = !this.media.audio_muted;
    this.setPressed(this.muteButton, this.media.audio_muted);
    this.mediaChanged();
  }

  async toggleCamera() {
    if (!this.cameraTrack) return;
    this.media.camera_off = !this.media.camera_off;
    if (!this.media.camera_off && this.videoSuppressedForBandwidth) {
      // The participant chose video again despite the slow connection.
      this.videoSuppressedForBandwidth = false;
      this.lowBandwidthSamples = 0;
      this.notice.hidden = true;
    }
    this.cameraTrack.enabled = !this.media.camera_off;
    this.setPressed(this.cameraButton, this.media.camera_off);
    await this.applyVideoTrack();
    this.mediaChanged();
  }

  async toggleScreenShare() {
    if (this.screenTrack) {
      this.stopScreenShare();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch {
      this.showNotice('notice_screen_share_failed');
      return;
    }
    this.screenTrack = stream.getVideoTracks()[0];
    // Text on a shared screen must stay legible: keep resolution, drop frame rate instead.
    if ('contentHint' in this.screenTrack) this.screenTrack.contentHint = 'detail';
    this.screenTrack.addEventListener('ended', () => this.stopScreenShare());
    this.selfTile.video.srcObject = stream;
    this.media.screen_sharing = true;
    this.setPressed(this.screenButton, true);
    await this.applyVideoTrack();
    this.mediaChanged();
  }

  async stopScreenShare() {
    if (!this.screenTrack) return;
    this.screenTrack.stop();
    this.screenTrack = null;
    this.selfTile.video.srcObject = this.localStream;
    this.media.screen_sharing = false;
    this.setPressed(this.screenButton, false);
    await this.applyVideoTrack();
    this.mediaChanged();
  }

  suppressVideoForBandwidth() {
    this.videoSuppressedForBandwidth = true;
    this.media.camera_off = true;
    this.setPressed(this.cameraButton, true);
    this.showNotice('notice_audio_only_bandwidth');
  }

  mediaChanged() {
    this.showMediaState(this.selfTile, this.media);
    this.send({ type: 'media-state', ...this.media });
  }

  async watchBandwidth() {
    if (this.stopped) return;
    let lowest = Infinity;
    for (const peer of this.peers.values()) {
      try {
        const report = await peer.pc.getStats();
        report.forEach((stat) => {
          if (stat.type === 'candidate-pair' && stat.nominated && stat.state === 'succeeded'
              && typeof stat.availableOutgoingBitrate === 'number') {
            lowest = Math.min(lowest, stat.availableOutgoingBitrate / 1e6);
          }
        });
      } catch {
        // A connection closing between the loop and getStats: skip it this round.
      }
    }
    if (lowest < CALL_VIDEO_FLOOR_MBPS && this.cameraTrack && !this.screenTrack
        && !this.videoSuppressedForBandwidth && !this.media.camera_off) {
      this.lowBandwidthSamples += 1;
      if (this.lowBandwidthSamples >= LOW_BANDWIDTH_SAMPLES) {
        this.suppressVideoForBandwidth();
        await this.applyVideoTrack();
        this.mediaChanged();
      }
    } else {
      this.lowBandwidthSamples = 0;
    }
  }

  // ------------------------------------------------------------------ peers (perfect negotiation)

  // The participant who arrives offers to everyone already there (`withMedia`); the others
  // create their side when that offer comes, and attach their media to the transceivers the
  // offer created. Offers crossing each other (glare) still resolve: the polite side yields.
  ensurePeer(id, role, withMedia) {
    const existing = this.peers.get(id);
    if (existing) return existing;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const peer = {
      id,
      pc,
      // Both ends agree on who yields in glare: the smaller id is polite.
      polite: this.selfId < id,
      makingOffer: false,
      ignoreOffer: false,
      settingRemoteAnswerPending: false,
      pendingCandidates: [],
      mediaAttached: false,
      disconnectedTimer: null,
      stream: new MediaStream(),
      tile: this.tile(id, this.nameOf(id, role)),
      videoTransceiver: null,
    };
    this.peers.set(id, peer);
    this.pcs.set(id, pc);
    peer.tile.video.srcObject = peer.stream;
    const member = this.members.get(id);
    if (member && member.media) this.showMediaState(peer.tile, member.media);
    if (withMedia) this.attachMedia(peer);

    pc.addEventListener('track', ({ track }) => {
      if (!peer.stream.getTracks().includes(track)) peer.stream.addTrack(track);
      this.play(peer.tile.video);
    });
    pc.addEventListener('negotiationneeded', async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        this.send({ type: 'offer', to: id, sdp: pc.localDescription.sdp });
      } catch (error) {
        console.warn('jaejin visit: offer failed', error);
      } finally {
        peer.makingOffer = false;
      }
    });
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (!candidate || !candidate.candidate) return;
      this.send({
        type: 'ice-candidate',
        to: id,
        candidate: {
          candidate: candidate.candidate,
          sdpMid: candidate.sdpMid,
          sdpMLineIndex: candidate.sdpMLineIndex,
          usernameFragment: candidate.usernameFragment,
        },
      });
    });
    pc.addEventListener('iceconnectionstatechange', () => this.onIceState(peer));
    return peer;
  }

  attachMedia(peer) {
    // addTrack reuses a transceiver the remote offer created, so an answer made after this
    // already sends; on the offering side it creates the transceivers.
    if (peer.mediaAttached) return;
    peer.mediaAttached = true;
    const { pc } = peer;
    const audio = this.localStream.getAudioTracks()[0];
    if (audio) pc.addTrack(audio, this.localStream);
    else if (!pc.getTransceivers().some((t) => t.receiver.track.kind === 'audio')) {
      pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    const video = this.sendingVideoTrack();
    if (video) {
      pc.addTrack(video, this.localStream);
    }
    let transceiver = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
    if (!transceiver) {
      // Keep a video slot so this peer's video still arrives and ours can start later.
      transceiver = pc.addTransceiver('video', {
        direction: this.cameraTrack ? 'sendrecv' : 'recvonly',
      });
    } else if (!video && this.cameraTrack) {
      transceiver.direction = 'sendrecv';
    }
    peer.videoTransceiver = transceiver;
  }

  onIceState(peer) {
    const state = peer.pc.iceConnectionState;
    window.clearTimeout(peer.disconnectedTimer);
    if (state === 'failed') {
      peer.pc.restartIce();
    } else if (state === 'disconnected') {
      // Often recovers by itself (a Wi-Fi hiccup); restart only if it does not.
      peer.disconnectedTimer = window.setTimeout(() => {
        if (peer.pc.iceConnectionState === 'disconnected') peer.pc.restartIce();
      }, DISCONNECTED_GRACE_MS);
    }
    this.updateStatus();
  }

  closePeer(id) {
    const peer = this.peers.get(id);
    if (!peer) return;
    window.clearTimeout(peer.disconnectedTimer);
    peer.pc.close();
    this.removeTile(peer.tile);
    this.peers.delete(id);
    this.pcs.delete(id);
  }

  async onDescription(from, description) {
    const member = this.members.get(from);
    const peer = this.ensurePeer(from, member && member.role, false);
    const { pc } = peer;
    const readyForOffer = !peer.makingOffer
      && (pc.signalingState === 'stable' || peer.settingRemoteAnswerPending);
    const collision = description.type === 'offer' && !readyForOffer;
    peer.ignoreOffer = !peer.polite && collision;
    if (peer.ignoreOffer) return;
    try {
      peer.settingRemoteAnswerPending = description.type === 'answer';
      await pc.setRemoteDescription(description);
      peer.settingRemoteAnswerPending = false;
      await this.flushCandidates(peer);
      if (description.type === 'offer') {
        this.attachMedia(peer);
        await pc.setLocalDescription();
        this.send({ type: 'answer', to: from, sdp: pc.localDescription.sdp });
      }
    } catch (error) {
      peer.settingRemoteAnswerPending = false;
      console.warn('jaejin visit: negotiation failed', error);
    }
  }

  async onCandidate(from, candidate) {
    const peer = this.peers.get(from);
    if (!peer || !candidate) return;
    if (!peer.pc.remoteDescription) {
      // Candidates can overtake the description they belong to: keep them until it is set.
      peer.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(peer, candidate);
  }

  async flushCandidates(peer) {
    const waiting = peer.pendingCandidates.splice(0);
    for (const candidate of waiting) await this.addCandidate(peer, candidate);
  }

  async addCandidate(peer, candidate) {
    try {
      await peer.pc.addIceCandidate(candidate);
    } catch (error) {
      if (!peer.ignoreOffer) console.warn('jaejin visit: candidate refused', error);
    }
  }

  // ------------------------------------------------------------------ signalling

  connect() {
    if (this.stopped) return;
    window.clearTimeout(this.reconnectTimer);
    this.setStatus(this.socketOpens ? 'status_reconnecting' : 'status_connecting');
    const socket = new WebSocket(this.wsUrl);
    this.socket = socket;
    socket.addEventListener('open', () => {
      if (socket !== this.socket) return;
      this.socketOpens += 1;
      this.reconnectAttempt = 0;
      socket.send(JSON.stringify({ type: 'join', session: this.session, media: this.media }));
      this.startKeepalive();
    });
    socket.addEventListener('message', (event) => {
      if (socket !== this.socket) return;
      this.keepaliveDeadline = null;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener('close', () => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.stopKeepalive();
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setStatus('status_reconnecting');
    const base = RECONNECT_DELAYS_MS[Math.min(this.reconnectAttempt,
      RECONNECT_DELAYS_MS.length - 1)];
    this.reconnectAttempt += 1;
    const delay = base / 2 + Math.random() * base / 2;
    window.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
  }

  dropSocket() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    this.stopKeepalive();
    socket.close();
    this.scheduleReconnect();
  }

  startKeepalive() {
    this.stopKeepalive();
    // A socket on a dead network can look open for minutes: ask for presence now and then,
    // and reconnect if nothing comes back.
    this.keepaliveTimer = window.setInterval(() => {
      if (this.keepaliveDeadline && Date.now() > this.keepaliveDeadline) {
        this.dropSocket();
        return;
      }
      if (!this.keepaliveDeadline) this.keepaliveDeadline = Date.now() + KEEPALIVE_TIMEOUT_MS;
      this.send({ type: 'presence' });
    }, KEEPALIVE_INTERVAL_MS);
  }

  stopKeepalive() {
    window.clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.keepaliveDeadline = null;
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  onMessage(message) {
    switch (message.type) {
      case 'presence':
        this.onPresence(message);
        break;
      case 'offer':
      case 'answer':
        this.onDescription(message.from, { type: message.type, sdp: message.sdp });
        break;
      case 'ice-candidate':
        this.onCandidate(message.from, message.candidate);
        break;
      case 'ice-restart-request': {
        const peer = this.peers.get(message.from);
        if (peer) peer.pc.restartIce();
        break;
      }
      case 'media-state': {
        const member = this.members.get(message.from);
        if (member) member.media = message;
        const peer = this.peers.get(message.from);
        if (peer) this.showMediaState(peer.tile, message);
        break;
      }
      case 'chat':
        this.showChat(message);
        break;
      case 'file-shared':
        this.showFile(message);
        break;
      case 'error':
        this.onError(message);
        break;
      default:
        break;
    }
  }

  onPresence(message) {
    const everyone = new Map((message.participants || []).map((p) => [p.id, p]));
    if (message.event === 'snapshot') {
      this.members = everyone;
      for (const id of [...this.peers.keys()]) {
        if (!everyone.has(id)) this.closePeer(id);
      }
      for (const member of everyone.values()) {
        if (member.id === this.selfId) continue;
        const known = this.peers.get(member.id);
        if (known) this.resumePeer(known);
        else this.ensurePeer(member.id, member.role, true);
        this.showMediaState(this.peers.get(member.id).tile, member.media || {});
      }
    } else {
      const who = message.participant;
      if (!who || who.id === this.selfId) return;
      if (message.event === 'left') {
        this.members.delete(who.id);
        this.closePeer(who.id);
      } else {
        // Joined, or rejoined: the newcomer offers; this side answers when its offer arrives.
        this.members.set(who.id, who);
        if (message.event === 'rejoined') {
          if (message.restart === 'new-connection') {
            // The other page was reloaded: its old peer connection is gone for good.
            this.closePeer(who.id);
          } else {
            const peer = this.peers.get(who.id);
            if (peer) peer.pc.restartIce();
          }
        }
        const peer = this.peers.get(who.id);
        if (peer) this.showMediaState(peer.tile, who.media || {});
      }
    }
    this.updateStatus();
  }

  resumePeer(peer) {
    // Back after our own socket dropped: an offer sent meanwhile may have been lost.
    const { pc } = peer;
    if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
      this.send({ type: 'offer', to: peer.id, sdp: pc.localDescription.sdp });
    }
    if (pc.iceConnectionState === 'failed' || pc.iceConnectionState === 'disconnected') {
      pc.restartIce();
    }
  }

  updateStatus() {
    if (this.stopped) return;
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      this.setStatus('status_reconnecting');
    } else if (this.peers.size === 0) {
      this.setStatus('status_waiting');
    } else {
      this.setStatus('status_in_call', { count: this.peers.size + 1 });
    }
  }

  onError(message) {
    const fatal = {
      ROOM_FULL: 'error_room_full',
      NOT_PERMITTED: 'error_not_permitted',
      CONNECTION_REPLACED: 'error_connection_replaced',
      ROOM_NOT_OPEN: 'error_room_not_open',
    };
    if (fatal[message.code]) {
      this.showNotice(fatal[message.code]);
      this.stop();
    } else {
      console.warn('jaejin visit: signalling refused a message', message.code, message.message);
    }
  }

  // ------------------------------------------------------------------ chat and files

  sendChat() {
    const text = this.chatInput.value.trim();
    if (!text) return;
    this.send({ type: 'chat', text: text.slice(0, 4000) });
    this.chatInput.value = '';
  }

  chatEntry(from, children) {
    const member = this.members.get(from);
    const who = from === this.selfId ? this.t('you') : this.nameOf(from, member && member.role);
    const item = element('li', {}, [element('strong', { text: `${who}: ` }), ...children]);
    this.chatLog.append(item);
    item.scrollIntoView({ block: 'nearest' });
  }

  showChat(message) {
    const time = new Date(message.sent_at);
    const stamp = element('time', {
      datetime: message.sent_at,
      // In the page's language (the template's <html lang>), in this device's time zone.
      text: Number.isNaN(time.getTime()) ? '' : ` ${time.toLocaleTimeString(
        document.documentElement.lang || [], { hour: '2-digit', minute: '2-digit' })}`,
    });
    this.chatEntry(message.from, [document.createTextNode(message.text), stamp]);
  }

  showFile(message) {
    const href = safeLink(message.url);
    const label = this.t('file_shared', { filename: message.filename });
    const link = href ? element('a', { href, download: message.filename, text: label })
      : document.createTextNode(label);
    this.chatEntry(message.from, [link]);
  }

  async shareFile() {
    const file = this.fileInput.files && this.fileInput.files[0];
    if (!file) return;
    const body = new FormData();
    body.append('file', file);
    try {
      const headers = this.csrfToken ? { 'X-CSRF-Token': this.csrfToken } : {};
      const response = await fetch(this.uploadUrl, {
        method: 'POST', body, credentials: 'same-origin', headers,
      });
      if (!response.ok) throw new Error(`upload answered ${response.status}`);
      this.fileInput.value = '';
    } catch {
      this.showNotice('error_upload_failed', { filename: file.name });
    }
  }

  // ------------------------------------------------------------------ lifecycle

  stop() {
    this.stopped = true;
    window.clearTimeout(this.reconnectTimer);
    this.stopKeepalive();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
    for (const id of [...this.peers.keys()]) this.closePeer(id);
    for (const track of this.localStream.getTracks()) track.stop();
    if (this.screenTrack) this.screenTrack.stop();
  }

  leave() {
    this.send({ type: 'leave' });
    this.stop();
    this.setStatus('status_left');
  }

  async start() {
    this.render();
    await this.acquireMedia();
    this.connect();
    window.addEventListener('offline', () => this.dropSocket());
    window.addEventListener('online', () => {
      if (!this.socket && !this.stopped) {
        this.reconnectAttempt = 0;
        this.connect();
      }
    });
    window.addEventListener('pagehide', () => this.send({ type: 'leave' }));
    window.setInterval(() => this.watchBandwidth(), BANDWIDTH_CHECK_INTERVAL_MS);
  }

  async stats() {
    const result = {};
    for (const [id, peer] of this.peers) {
      let framesDecoded = 0;
      let bytesReceived = 0;
      let frameWidth = 0;
      let frameHeight = 0;
      const report = await peer.pc.getStats();
      report.forEach((stat) => {
        if (stat.type !== 'inbound-rtp') return;
        bytesReceived += stat.bytesReceived || 0;
        if (stat.kind === 'video') {
          framesDecoded += stat.framesDecoded || 0;
          frameWidth = stat.frameWidth || frameWidth;
          frameHeight = stat.frameHeight || frameHeight;
        }
      });
      result[id] = { framesDecoded, bytesReceived, frameWidth, frameHeight };
    }
    return result;
  }
}

const root = document.getElementById('visit');
if (root) {
  const visit = new Visit(root);
  window.jaejinVisit = {
    peers: visit.pcs,
    stats: () => visit.stats(),
    get socketOpens() {
      return visit.socketOpens;
    },
    get media() {
      return { ...visit.media };
    },
    leave: () => visit.leave(),
  };
  visit.start();
}
