/*
 * Hearth — the patient's join page for a video visit (served at /join#<token>).
 *
 * Speaks hearth-visit protocol v1 (crates/visit-protocol/PROTOCOL.md):
 *   1. POST /v1/links/check {token}            → lobby, or a clear error view
 *   2. WebSocket /v1/ws: ping (network check), then join {token, name}
 *   3. welcome → waiting → admitted {peers}: a full mesh of RTCPeerConnections; the newcomer
 *      offers, existing participants answer. Signaling is relayed by the service; media and
 *      chat (an RTCDataChannel labelled "chat") go peer to peer.
 *   4. A dropped socket resumes with {participant, resume} from sessionStorage.
 *
 * Rules kept here: no inline script/style (strict CSP), user text only via textContent, and
 * the link token, resume secret and TURN credentials are never written to the console.
 * body[data-state] is one of: checking lobby waiting call reconnecting left ended removed error.
 */
'use strict';

(() => {
  const KEYS = { token: 'hearth.visit.token', participant: 'hearth.visit.participant',
    resume: 'hearth.visit.resume', name: 'hearth.visit.name' };
  const WS_URL = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/v1/ws';
  const KEEPALIVE_MS = 20000;     // the service closes sockets silent for 60 s
  const SILENCE_MS = 45000;       // nothing heard for this long: treat the socket as dead
  const MEDIA_WAIT_MS = 10000;    // how long "admitted" waits for an unanswered camera prompt
  const SERIOUS = new Set(['visit_full', 'link_expired', 'link_invalid', 'wrong_visit',
    'resume_refused', 'visit_over', 'unavailable', 'rate_limited', 'unauthorized']);
  // [heading, message (#message), offer "Try again"]
  const LINK_ERRORS = {
    link_expired: ['This link has expired', 'This visit link has expired. Please contact your clinic for a new link.'],
    link_not_yet: ['Your visit has not opened yet',
      'This visit has not opened yet. Please come back closer to your appointment time.', true],
    link_invalid: ["This link doesn't work", "This link is not valid. Check that you opened the whole link from your clinic's message, or contact your clinic."],
    rate_limited: ['Please wait a moment', 'Too many attempts; wait a minute and reload this page.', true],
  };
  LINK_ERRORS.wrong_visit = LINK_ERRORS.link_invalid;
  const CALL_ERRORS = {
    visit_full: 'The visit is full: at most four people can take part with video.',
    link_expired: 'Your visit link has expired.',
    unavailable: 'The visit service is having trouble. Please wait a moment.',
    not_admitted: 'You are not in the visit yet.',
  };
  const ENDED = ['Thank you', 'The visit is over. Thank you — you can close this page.'];
  const WITHOUT = ' You can still join: you will see and hear your clinician, but they will not see or hear you.';
  const MEDIA_ERRORS = {
    NotAllowedError: 'Your browser is not letting this page use your camera and microphone. To allow them, select the camera or lock icon next to the web address, choose Allow for the camera and microphone, then select "Try camera and microphone again".',
    NotFoundError: 'No camera or microphone found.',
    NotReadableError: 'Your camera or microphone is busy or could not start. Close other apps that use it, then try again.',
  };
  MEDIA_ERRORS.SecurityError = MEDIA_ERRORS.NotAllowedError;
  MEDIA_ERRORS.OverconstrainedError = MEDIA_ERRORS.NotFoundError;
  MEDIA_ERRORS.AbortError = MEDIA_ERRORS.NotReadableError;

  const $ = (id) => document.getElementById(id);
  const noop = () => {};
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ------------------------------------------------------------------ state
  const app = {
    token: '', participant: '', resume: '', ice: null, view: '',
    ws: null, firstMessage: null, queue: Promise.resolve(),
    joining: false,   // join sent, no welcome yet
    joined: false,    // welcomed once: a dropped socket now means "reconnect"
    welcomed: false,  // the current socket has been welcomed
    closing: false,   // the service said removed/ended/refused: its close is expected
    terminal: false,  // left, removed, ended or failed for good
    attempts: 0, reconnectTimer: 0, keepAliveTimer: 0, lastHeard: 0,
    pingId: 0, pings: new Map(), netChecking: false, netSamples: [], netTimer: 0,
    local: null, mediaReady: Promise.resolve(null), lobbyStarted: false, micMuted: false, camOff: false,
    audioCtx: null, analyser: null, meterSource: null, meterFrame: 0, meterLevel: 0, meterAria: 0,
    peers: new Map(), unread: 0, noticeAction: null,
  };

  // sessionStorage may be unavailable (privacy settings): then we keep things in memory only.
  function store(key, value) {
    try { if (value) sessionStorage.setItem(key, value); else sessionStorage.removeItem(key); } catch (_) { /* memory only */ }
  }
  function load(key) { try { return sessionStorage.getItem(key) || ''; } catch (_) { return ''; } }

  // ------------------------------------------------------------------ views
  const VIEWS = ['checking', 'lobby', 'waiting', 'call', 'notice'];

  /** Show one view, set body[data-state], announce, and move focus to its heading. */
  function showView(view, state, announcement, forceFocus) {
    document.body.dataset.state = state;
    const changed = app.view !== view;
    app.view = view;
    for (const name of VIEWS) $('view-' + name).hidden = name !== view;
    $('reconnect-banner').hidden = state !== 'reconnecting';
    // The device check (preview, meter, pickers) is shown in the lobby and the waiting room.
    const slot = view === 'lobby' || view === 'waiting' ? $(view + '-devices') : null;
    const panel = $('devices');
    panel.hidden = !slot;
    if (slot) {
      if (panel.parentNode !== slot) slot.appendChild(panel);
      $('preview').play().catch(noop);
      startMeterLoop();
    }
    if (changed) { setLine('alert-line', ''); setLine('status-line', ''); }
    if (announcement) announce(announcement);
    if (changed || forceFocus) $('view-' + view).querySelector('h1').focus();
  }

  function showNotice(state, title, message, button) {
    $('notice-title').textContent = title;
    $('message').textContent = message;
    const b = $('notice-button');
    b.hidden = !button;
    if (button) { b.textContent = button.label; app.noticeAction = button.action; }
    showView('notice', state, message, true);
  }

  function announce(text) { $('live').textContent = text; }
  function setLine(id, text) { $(id).textContent = text; }
  const reload = () => location.reload();
  const retry = () => (app.terminal ? reload() : checkLink());

  // ------------------------------------------------------------------ the link
  function takeToken() {
    if (location.hash.length <= 1) return load(KEYS.token);
    let token = location.hash.slice(1);
    try { token = decodeURIComponent(token); } catch (_) { /* keep it as written */ }
    if (token !== load(KEYS.token)) { store(KEYS.participant, ''); store(KEYS.resume, ''); }
    store(KEYS.token, token);
    // Take the token out of the address bar (and so out of history and screen shares).
    history.replaceState(null, '', location.pathname + location.search);
    return token;
  }

  async function checkLink() {
    showView('checking', 'checking', 'Checking your visit link…');
    let res;
    try {
      res = await fetch('/v1/links/check', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: app.token }), cache: 'no-store', credentials: 'same-origin' });
    } catch (_) { return showLinkError(''); }
    if (res.ok) {
      try { app.visit = (await res.json()).visit || ''; } catch (_) { app.visit = ''; }
      return enterLobby();
    }
    let code = '';
    try { code = (await res.json()).code || ''; } catch (_) { /* not JSON */ }
    return showLinkError(code);
  }

  function showLinkError(code) {
    const known = LINK_ERRORS[code] || ["We couldn't open your visit",
      'Something went wrong while opening your visit. Please check your internet connection and try again.', true];
    showNotice('error', known[0], known[1], known[2] ? { label: 'Try again', action: retry } : null);
  }

  function enterLobby() {
    showView('lobby', 'lobby', 'Your link works. Get ready for your visit.');
    if (!$('name').value) $('name').value = load(KEYS.name);
    if (app.lobbyStarted) return;
    app.lobbyStarted = true;
    app.mediaReady = startMedia();
    startNetworkCheck();
  }

  // ------------------------------------------------------------------ camera and microphone
  function deviceMessage(text, failed) { setLine('device-status', text); $('media-retry').hidden = !failed; }

  function constraintsFor(kind) {
    const id = $(kind === 'audio' ? 'mic-select' : 'camera-select').value;
    const c = kind === 'audio' ? {} : { width: { ideal: 1280 }, height: { ideal: 720 } };
    if (id) c.deviceId = { exact: id };
    return kind === 'audio' && !id ? true : c;
  }

  /** Both devices if possible; if one kind is missing, whichever one exists. */
  async function getAnyMedia() {
    const md = navigator.mediaDevices;
    const audio = constraintsFor('audio');
    const video = constraintsFor('video');
    try {
      return await md.getUserMedia({ audio, video });
    } catch (err) {
      if (err.name !== 'NotFoundError' && err.name !== 'OverconstrainedError') throw err;
      for (const c of [{ audio }, { video }]) {
        try { return await md.getUserMedia(c); } catch (e) { if (e.name === 'NotAllowedError') throw e; }
      }
      throw err;
    }
  }

  /** Acquire local media for the preview and the call; resolves with a stream or null. */
  async function startMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      deviceMessage('This browser cannot use a camera or microphone here.' + WITHOUT, false);
      return null;
    }
    deviceMessage('Asking for your camera and microphone… Please choose Allow if your browser asks.', false);
    stopLocalMedia();
    let stream;
    try {
      stream = await getAnyMedia();
    } catch (err) {
      deviceMessage((MEDIA_ERRORS[err && err.name] || 'We could not start your camera or microphone.') + WITHOUT, true);
      $('preview-off').hidden = false;
      return null;
    }
    if (app.terminal) { stream.getTracks().forEach((t) => t.stop()); return null; }
    setLocalStream(stream);
    const a = stream.getAudioTracks().length > 0;
    const v = stream.getVideoTracks().length > 0;
    deviceMessage(a && v ? 'Your camera and microphone are on. If you can see yourself and the bar moves when you speak, you are ready.'
      : a ? 'No camera found. Your clinician will hear you but not see you.'
        : 'No microphone found. Your clinician will see you but not hear you.', false);
    await listDevices();
    return stream;
  }

  function setLocalStream(stream) {
    app.local = stream;
    stream.getAudioTracks().forEach((t) => { t.enabled = !app.micMuted; });
    stream.getVideoTracks().forEach((t) => { t.enabled = !app.camOff; });
    $('preview').srcObject = stream;
    $('preview').play().catch(noop);
    $('preview-off').hidden = stream.getVideoTracks().length > 0;
    startMeter();
  }

  function stopLocalMedia() {
    if (app.local) app.local.getTracks().forEach((t) => t.stop());
    app.local = null;
  }

  /** Fill the camera and microphone pickers (labels are only known after permission). */
  async function listDevices() {
    let devices = [];
    try { devices = await navigator.mediaDevices.enumerateDevices(); } catch (_) { return; }
    const fill = (select, kind, track, word) => {
      const list = devices.filter((d) => d.kind === kind && d.deviceId);
      const current = track ? (track.getSettings().deviceId || '') : select.value;
      select.replaceChildren(...list.map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || word + ' ' + (i + 1);
        return o;
      }));
      if (list.some((d) => d.deviceId === current)) select.value = current;
      $(select.id.replace('select', 'field')).hidden = list.length === 0;
      return list.length;
    };
    const local = app.local;
    const count = fill($('camera-select'), 'videoinput', local && local.getVideoTracks()[0], 'Camera') +
      fill($('mic-select'), 'audioinput', local && local.getAudioTracks()[0], 'Microphone');
    $('device-pickers').hidden = count === 0 || !local;
  }

  /** A picker changed: re-acquire that kind of device and swap it in everywhere. */
  async function switchDevice(kind) {
    const word = kind === 'audio' ? 'microphone' : 'camera';
    const old = app.local ? app.local.getTracks().filter((t) => t.kind === kind) : [];
    old.forEach((t) => t.stop()); // release the old camera first: phones allow only one at a time
    let track = null;
    try {
      track = (await navigator.mediaDevices.getUserMedia({ [kind]: constraintsFor(kind) })).getTracks()[0];
    } catch (_) { deviceMessage('That ' + word + ' could not be started. Please choose another one.', false); }
    const keep = app.local ? app.local.getTracks().filter((t) => t.kind !== kind) : [];
    setLocalStream(new MediaStream(track ? keep.concat(track) : keep));
    for (const entry of app.peers.values()) {
      const sender = entry.pc && entry.pc.getSenders().find((s) => s.track && old.includes(s.track));
      if (sender) sender.replaceTrack(track).catch(noop);
    }
    if (track) deviceMessage('Switched ' + word + '.', false);
  }

  // ------------------------------------------------------------------ microphone level meter
  function startMeter() {
    const track = app.local && app.local.getAudioTracks()[0];
    if (app.meterSource) { app.meterSource.disconnect(); app.meterSource = null; }
    if (!track || typeof AudioContext === 'undefined') return;
    try {
      if (!app.audioCtx) app.audioCtx = new AudioContext();
      app.audioCtx.resume().catch(noop); // may stay suspended until the first click or key
      if (!app.analyser) { app.analyser = app.audioCtx.createAnalyser(); app.analyser.fftSize = 1024; }
      app.meterSource = app.audioCtx.createMediaStreamSource(new MediaStream([track]));
      app.meterSource.connect(app.analyser); // not to the speakers: no echo
    } catch (_) { return; }
    startMeterLoop();
  }

  function startMeterLoop() {
    if (!app.meterFrame && app.analyser) app.meterFrame = requestAnimationFrame(meterTick);
  }

  function meterTick() {
    app.meterFrame = 0;
    if ($('devices').hidden || !app.meterSource) return setMeter(0); // loop stops while hidden
    const buf = new Uint8Array(app.analyser.fftSize);
    app.analyser.getByteTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += ((v - 128) / 128) ** 2;
    const db = 20 * Math.log10(Math.sqrt(sum / buf.length) || 1e-6);
    const level = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
    setMeter(Math.max(level, app.meterLevel * 0.85)); // rise fast, fall gently
    app.meterFrame = requestAnimationFrame(meterTick);
  }

  function setMeter(level) {
    app.meterLevel = level;
    $('mic-level-bar').style.transform = 'scaleX(' + (level / 100).toFixed(3) + ')'; // CSSOM: CSP-safe
    if (Date.now() - app.meterAria > 500 || level === 0) { // keep the accessibility tree calm
      app.meterAria = Date.now();
      $('mic-level').setAttribute('aria-valuenow', String(Math.round(level)));
    }
  }

  function resumeAudio() { if (app.audioCtx) app.audioCtx.resume().catch(noop); }

  // ------------------------------------------------------------------ WebSocket
  function openSocket() {
    const ws = new WebSocket(WS_URL);
    app.ws = ws;
    app.welcomed = false;
    ws.onopen = () => { if (app.ws === ws) onSocketOpen(); };
    ws.onmessage = (e) => { if (app.ws === ws) onSocketMessage(e.data); };
    ws.onclose = () => { if (app.ws === ws) onSocketClosed(); };
    ws.onerror = noop; // a close event follows
  }

  function send(msg) {
    const ws = app.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** Send the first message (join or resume) now, or as soon as a socket is open. */
  function sendFirst(msg) {
    app.firstMessage = msg;
    if (app.ws && app.ws.readyState === WebSocket.OPEN) onSocketOpen();
    else if (!app.ws || app.ws.readyState !== WebSocket.CONNECTING) openSocket();
  }

  function onSocketOpen() {
    app.lastHeard = Date.now();
    if (app.firstMessage) { send(app.firstMessage); app.firstMessage = null; }
    if (app.netChecking && app.netSamples.length === 0) ping();
    clearInterval(app.keepAliveTimer);
    app.keepAliveTimer = setInterval(() => {
      if ((app.welcomed || app.joining) && Date.now() - app.lastHeard > SILENCE_MS) return dropSocket();
      ping();
    }, KEEPALIVE_MS);
  }

  function onSocketMessage(data) {
    app.lastHeard = Date.now();
    let msg;
    try { msg = JSON.parse(data); } catch (_) { return; }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'pong') return onPong(msg.id);
    // The socket closes right after these: remember now, so that the close is expected.
    if (msg.type === 'removed' || msg.type === 'ended' ||
      (msg.type === 'error' && (msg.code === 'resume_refused' || msg.code === 'visit_over'))) app.closing = true;
    // One at a time, in order: signaling steps are asynchronous and must not interleave.
    app.queue = app.queue.then(() => handleMessage(msg))
      .catch((err) => console.warn('hearth-visit: could not handle', msg.type, err && err.name));
  }

  function onSocketClosed() {
    clearInterval(app.keepAliveTimer);
    app.ws = null;
    app.firstMessage = null;
    if (app.terminal || app.closing) return;
    if (app.joined) return scheduleReconnect();
    if (app.joining) {
      app.joining = false;
      resetJoinButton();
      setLine('alert-line', 'The connection dropped while joining. Please check your internet connection and select Join visit again.');
    }
    if (app.netChecking && app.netSamples.length === 0) netFailed();
  }

  /** Let go of the socket (handlers detached): `leave`, teardown, or a silent connection. */
  function closeSocket() {
    const ws = app.ws;
    app.ws = null;
    clearInterval(app.keepAliveTimer);
    if (ws) { ws.onopen = ws.onmessage = ws.onclose = null; try { ws.close(1000); } catch (_) { /* closed */ } }
  }

  /** Give up on this socket and carry on as if it had closed (reconnect if we had joined). */
  function dropSocket() { closeSocket(); onSocketClosed(); }

  function scheduleReconnect() {
    clearTimeout(app.reconnectTimer);
    document.body.dataset.state = 'reconnecting';
    $('reconnect-banner').hidden = false;
    announce('The connection dropped. Reconnecting…');
    const delay = Math.min(500 * 2 ** app.attempts, 10000); // 0.5 s, 1 s, 2 s … 10 s
    app.attempts += 1;
    app.reconnectTimer = setTimeout(reconnectNow, delay);
  }

  function reconnectNow() {
    clearTimeout(app.reconnectTimer);
    if (app.terminal || app.ws) return;
    sendFirst({ type: 'resume', visit: app.visit, participant: load(KEYS.participant) || app.participant,
      resume: load(KEYS.resume) || app.resume });
  }

  function ping() {
    const id = ++app.pingId;
    app.pings.set(id, performance.now());
    if (app.pings.size > 20) app.pings.delete(app.pings.keys().next().value);
    send({ type: 'ping', id });
  }

  // ------------------------------------------------------------------ network check (lobby)
  function startNetworkCheck() {
    app.netChecking = true;
    app.netSamples = [];
    $('network-retry').hidden = true;
    setLine('network-status', 'Checking your connection…');
    clearTimeout(app.netTimer);
    app.netTimer = setTimeout(() => { if (app.netSamples.length === 0) netFailed(); }, 8000);
    if (app.ws && app.ws.readyState === WebSocket.OPEN) ping();
    else if (!app.ws) openSocket();
  }

  function onPong(id) {
    const sent = app.pings.get(id);
    app.pings.delete(id);
    if (sent === undefined || !app.netChecking) return;
    app.netSamples.push(performance.now() - sent);
    const sorted = app.netSamples.slice().sort((a, b) => a - b);
    const ms = Math.round(sorted[Math.floor(sorted.length / 2)]); // the median
    setLine('network-status', ms < 500 ? 'Connection OK (' + ms + ' ms)'
      : 'Your connection is slow (' + ms + ' ms). The video may be choppy.');
    if (app.netSamples.length < 3) setTimeout(ping, 500);
    else app.netChecking = false;
  }

  function netFailed() {
    app.netChecking = false;
    clearTimeout(app.netTimer);
    setLine('network-status', 'We could not reach the visit service. Check your internet connection, then check again.');
    $('network-retry').hidden = false;
  }

  // ------------------------------------------------------------------ joining
  function onJoinSubmit(ev) {
    ev.preventDefault();
    resumeAudio();
    const input = $('name');
    const name = input.value.trim();
    $('name-error').hidden = Boolean(name);
    input.setAttribute('aria-invalid', name ? 'false' : 'true');
    input.setAttribute('aria-describedby', name ? 'name-hint' : 'name-error name-hint');
    if (!name) return input.focus();
    if (app.joining) return;
    store(KEYS.name, name);
    app.joining = true;
    setLine('alert-line', '');
    $('join-button').disabled = true;
    $('join-button').textContent = 'Joining…';
    sendFirst({ type: 'join', token: app.token, name, visit: app.visit || undefined });
  }

  function resetJoinButton() {
    $('join-button').disabled = false;
    $('join-button').textContent = 'Join visit';
  }

  // ------------------------------------------------------------------ service messages
  async function handleMessage(msg) {
    if (app.terminal) return;
    switch (msg.type) {
      case 'welcome':
        app.joined = app.welcomed = true; app.joining = false; app.attempts = 0;
        app.participant = msg.participant || ''; app.resume = msg.resume || '';
        app.visit = msg.visit || app.visit;
        store(KEYS.participant, app.participant); store(KEYS.resume, app.resume);
        app.ice = msg.ice || null;
        break;
      case 'waiting':
        showView('waiting', 'waiting', 'You are in the waiting room. Please wait, your clinician will let you in shortly.');
        break;
      case 'admitted':
        // TURN credentials come with admission, not to the waiting room.
        if (msg.ice) app.ice = msg.ice;
        return onAdmitted(msg.peers || []);
      case 'peer_joined': return onPeerJoined(msg.peer || {});
      case 'peer_left': return removePeer(msg.peer && typeof msg.peer === 'object' ? msg.peer.id : msg.peer);
      case 'signal': return onSignal(msg.from, msg.data || {});
      case 'removed': return finish('removed', 'Your visit has closed', 'The clinician has ended your place in this visit.');
      case 'ended': return finish('ended', ...ENDED);
      case 'error': return onServerError(msg.code, msg.message);
      default: // roster, and any message type added later: not for this page
    }
  }

  function onServerError(code, message) {
    if (code === 'not_joined') return; // harmless: something was sent before join
    if (code === 'resume_refused') {
      teardown();
      return showNotice('error', 'You were away too long',
        'Your place in the visit has lapsed. Select Join again to go back to the waiting room.',
        { label: 'Join again', action: reload });
    }
    if (code === 'visit_over') return finish('ended', ...ENDED);
    if (app.joining) { // the answer to our join
      if (LINK_ERRORS[code]) { teardown(); return showLinkError(code); }
      app.joining = false;
      resetJoinButton();
      return setLine('alert-line', code === 'bad_message' ? 'Please check your name and try again.'
        : 'We could not join the visit just now. Please try again in a moment.');
    }
    if (app.joined && !app.welcomed) return dropSocket(); // resume not accepted yet: retry later
    setLine(SERIOUS.has(code) ? 'alert-line' : 'status-line', CALL_ERRORS[code] || message || 'Something went wrong.');
  }

  async function onAdmitted(peers) {
    showView('call', 'call', app.view === 'call' ? 'Reconnected to your visit.'
      : 'Your clinician has let you in. Your visit is starting.');
    // An unanswered camera prompt must not hold up the call for ever.
    await Promise.race([app.mediaReady, sleep(MEDIA_WAIT_MS)]);
    const self = $('self-view');
    if (self.srcObject !== app.local) self.srcObject = app.local;
    self.play().catch(noop);
    updateControls();
    if (typeof RTCPeerConnection === 'undefined') {
      setLine('alert-line', 'This browser cannot make video calls. Please use a current version of Chrome, Edge, Firefox or Safari.');
    }
    // The newcomer offers to everyone listed; after a resume, every connection starts anew.
    for (const id of Array.from(app.peers.keys())) removePeer(id, true);
    for (const p of peers) {
      const entry = ensurePeer(p);
      try { await startOffer(entry); } catch (err) { connectionTrouble(entry, err); }
    }
  }

  function onPeerJoined(peer) {
    if (!peer.id) return;
    const entry = ensurePeer(peer);
    closeConnection(entry); // a peer that came back drops its old connection; its offer follows
    setTileStatus(entry, 'Connecting…');
    announce(entry.name + ' joined the visit.');
  }

  function finish(state, title, message) {
    teardown();
    showNotice(state, title, message, null);
  }

  /** Leave for good: tell the service, then close everything. */
  function leave() {
    send({ type: 'leave' });
    teardown();
    showNotice('left', 'You have left the visit',
      'You have left the visit. If you left by mistake, select Rejoin; your clinician may need to let you in again.',
      { label: 'Rejoin', action: reload });
  }

  function teardown() {
    app.terminal = true;
    clearTimeout(app.reconnectTimer);
    clearTimeout(app.netTimer);
    closeSocket();
    for (const id of Array.from(app.peers.keys())) removePeer(id, true);
    stopLocalMedia();
    $('preview').srcObject = $('self-view').srcObject = null;
    cancelAnimationFrame(app.meterFrame);
    if (app.audioCtx) app.audioCtx.close().catch(noop);
    app.audioCtx = app.analyser = app.meterSource = null;
    store(KEYS.participant, ''); store(KEYS.resume, '');
  }

  // ------------------------------------------------------------------ peer connections
  function ensurePeer(peer) {
    let entry = app.peers.get(peer.id);
    if (!entry) {
      entry = { id: peer.id, name: '', role: '', pc: null, dc: null, offerer: false, pending: [],
        stream: null, tile: null, video: null, nameEl: null, status: null, restarting: false };
      app.peers.set(peer.id, entry);
    }
    entry.name = peer.name || entry.name || 'Another participant';
    entry.role = peer.role || entry.role;
    makeTile(entry);
    return entry;
  }

  function newConnection(entry, offerer) {
    closeConnection(entry);
    const ice = app.ice || {};
    // `new RTCPeerConnection` is looked up here, at call time, on purpose (tests wrap it).
    const pc = new RTCPeerConnection({ iceServers: Array.isArray(ice.servers) ? ice.servers : [],
      iceTransportPolicy: ice.transport_policy === 'relay' ? 'relay' : 'all' });
    entry.pc = pc;
    entry.offerer = offerer;
    pc.onicecandidate = (e) => {
      if (e.candidate && entry.pc === pc) signal(entry.id, { candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => {
      if (entry.pc !== pc) return;
      let stream = e.streams && e.streams[0];
      if (!stream) { stream = entry.stream || new MediaStream(); stream.addTrack(e.track); }
      entry.stream = stream;
      if (entry.video.srcObject !== stream) entry.video.srcObject = stream;
      entry.video.play().catch((err) => { // autoplay with sound blocked: offer a button
        if (err && err.name === 'NotAllowedError') $('sound-button').hidden = false;
      });
    };
    pc.ondatachannel = (e) => { if (entry.pc === pc && e.channel.label === 'chat') setupChannel(entry, e.channel); };
    pc.oniceconnectionstatechange = pc.onconnectionstatechange = () => {
      if (entry.pc !== pc) return;
      const failed = pc.connectionState === 'failed' || pc.iceConnectionState === 'failed';
      const ok = pc.connectionState === 'connected' || ['connected', 'completed'].includes(pc.iceConnectionState);
      setTileStatus(entry, failed ? 'Connection problem, trying again…' : ok ? '' : 'Connecting…');
      if (failed && entry.offerer) restartIce(entry); // the offering side restarts ICE
    };
    return pc;
  }

  /** Our tracks; when offering, receive-only transceivers for any kind we cannot send. */
  function addLocalMedia(pc, offering) {
    const kinds = new Set();
    if (app.local) for (const track of app.local.getTracks()) { pc.addTrack(track, app.local); kinds.add(track.kind); }
    if (offering) for (const kind of ['audio', 'video']) if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: 'recvonly' });
  }

  async function startOffer(entry) {
    const pc = newConnection(entry, true);
    addLocalMedia(pc, true);
    setupChannel(entry, pc.createDataChannel('chat')); // the offerer creates the chat channel
    setTileStatus(entry, 'Connecting…');
    await sendOffer(entry, pc, false);
  }

  async function sendOffer(entry, pc, iceRestart) {
    await pc.setLocalDescription(await pc.createOffer(iceRestart ? { iceRestart: true } : undefined));
    sendSdp(entry.id, pc);
  }

  function sendSdp(to, pc) {
    const d = pc.localDescription;
    signal(to, { sdp: { type: d.type, sdp: d.sdp } });
  }

  async function restartIce(entry) {
    const pc = entry.pc;
    if (entry.restarting || !pc || pc.signalingState !== 'stable') return;
    entry.restarting = true;
    try {
      if (typeof pc.restartIce === 'function') pc.restartIce();
      await sendOffer(entry, pc, true);
    } catch (err) {
      connectionTrouble(entry, err);
    } finally {
      entry.restarting = false;
    }
  }

  function signal(to, data) { send({ type: 'signal', to, data }); }

  /** The SDP session id ("o=" line): the same for every offer from one RTCPeerConnection. */
  function sessionId(sdp) {
    const m = /^o=\S+ (\S+) /m.exec(sdp || '');
    return m ? m[1] : '';
  }

  async function onSignal(from, data) {
    if (!from) return;
    const entry = app.peers.get(from) || ensurePeer({ id: from });
    const sdp = data.sdp;
    let pc = entry.pc;
    if (sdp && sdp.type === 'offer') {
      // A new session (no connection yet, or the peer reconnected with a new RTCPeerConnection)
      // gets a new connection; a re-offer in the same session (ICE restart) reuses ours.
      const remote = pc && pc.remoteDescription;
      let fresh = !pc || pc.signalingState === 'closed' ||
        Boolean(remote && (!sessionId(sdp.sdp) || sessionId(remote.sdp) !== sessionId(sdp.sdp)));
      if (!fresh && pc.signalingState === 'have-local-offer') {
        if (app.participant < from) fresh = true; else return; // both offered: the lower id yields
      }
      if (fresh) pc = newConnection(entry, false);
      await pc.setRemoteDescription(sdp);
      if (fresh) addLocalMedia(pc, false); // after the offer, so our tracks reuse its transceivers
      await flushCandidates(entry, pc);
      await pc.setLocalDescription(await pc.createAnswer());
      sendSdp(from, pc);
    } else if (sdp && sdp.type === 'answer') {
      if (!pc || pc.signalingState !== 'have-local-offer') return;
      await pc.setRemoteDescription(sdp);
      await flushCandidates(entry, pc);
    } else if (data.candidate) {
      if (pc && pc.remoteDescription) await pc.addIceCandidate(data.candidate).catch(noop);
      else entry.pending.push(data.candidate); // until the remote description is set
    }
  }

  async function flushCandidates(entry, pc) {
    for (const c of entry.pending.splice(0)) await pc.addIceCandidate(c).catch(noop);
  }

  function connectionTrouble(entry, err) {
    console.warn('hearth-visit: peer connection trouble', err && err.name);
    setTileStatus(entry, 'Could not connect');
  }

  function closeConnection(entry) {
    if (entry.dc) { entry.dc.onmessage = null; try { entry.dc.close(); } catch (_) { /* closed */ } }
    const pc = entry.pc;
    if (pc) {
      pc.onicecandidate = pc.ontrack = pc.ondatachannel = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
      pc.close();
    }
    entry.pc = entry.dc = entry.stream = null;
    entry.pending = [];
    if (entry.video) entry.video.srcObject = null;
  }

  function removePeer(id, quiet) {
    const entry = app.peers.get(id);
    if (!entry) return;
    closeConnection(entry);
    entry.tile.remove();
    app.peers.delete(id);
    updateGrid();
    if (!quiet) announce(entry.name + ' left the visit.');
  }

  // ------------------------------------------------------------------ video tiles
  function makeTile(entry) {
    const label = entry.role === 'clinician' ? entry.name + ' (clinician)' : entry.name;
    if (!entry.tile) {
      const el = (tag, cls) => { const e = document.createElement(tag); if (cls) e.className = cls; return e; };
      entry.tile = el('figure', 'tile');
      entry.video = el('video');
      entry.video.autoplay = true;
      entry.video.playsInline = true;
      entry.video.setAttribute('playsinline', '');
      entry.nameEl = el('span', 'tile-name');
      entry.status = el('span', 'tile-status');
      const caption = el('figcaption');
      caption.append(entry.nameEl, entry.status);
      entry.tile.append(entry.video, caption);
      $('remote-grid').append(entry.tile);
      updateGrid();
    }
    entry.video.setAttribute('aria-label', 'Video of ' + label);
    entry.nameEl.textContent = label;
  }

  function setTileStatus(entry, text) { if (entry.status) entry.status.textContent = text; }

  function updateGrid() {
    $('remote-grid').dataset.count = String(app.peers.size);
    $('grid-empty').hidden = app.peers.size > 0;
  }

  // ------------------------------------------------------------------ call controls
  function updateControls() {
    const has = (kind) => Boolean(app.local && app.local.getTracks().some((t) => t.kind === kind));
    const set = (button, present, off, none, turnOn, turnOff) => {
      button.disabled = !present;
      button.setAttribute('aria-pressed', String(off));
      button.textContent = !present ? none : off ? turnOn : turnOff;
    };
    set($('mute-button'), has('audio'), app.micMuted, 'No microphone', 'Unmute microphone', 'Mute microphone');
    set($('camera-button'), has('video'), app.camOff, 'No camera', 'Camera on', 'Camera off');
    $('self-tile').classList.toggle('off', !has('video') || app.camOff);
  }

  function toggle(kind) {
    if (!app.local) return;
    const off = kind === 'audio' ? (app.micMuted = !app.micMuted) : (app.camOff = !app.camOff);
    app.local.getTracks().filter((t) => t.kind === kind).forEach((t) => { t.enabled = !off; });
    updateControls();
    announce(kind === 'audio' ? (off ? 'Microphone muted.' : 'Microphone on.') : (off ? 'Camera off.' : 'Camera on.'));
  }

  function toggleChat() {
    const panel = $('chat-panel');
    panel.hidden = !panel.hidden;
    $('chat-button').setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) { app.unread = 0; $('chat-input').focus(); }
    updateChatButton();
  }

  function updateChatButton() { $('chat-button').textContent = app.unread ? 'Chat (' + app.unread + ' new)' : 'Chat'; }

  // ------------------------------------------------------------------ chat (peer to peer)
  function setupChannel(entry, channel) {
    entry.dc = channel;
    channel.onmessage = (e) => {
      if (typeof e.data !== 'string' || e.data.length > 20000) return;
      let m;
      try { m = JSON.parse(e.data); } catch (_) { return; }
      const text = m && typeof m.text === 'string' ? m.text.trim().slice(0, 2000) : '';
      if (text) addChat(entry.name, text, false);
    };
  }

  function sendChat(ev) {
    ev.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim();
    if (!text) return;
    const payload = JSON.stringify({ text });
    let sent = 0;
    for (const entry of app.peers.values()) {
      if (entry.dc && entry.dc.readyState === 'open') {
        try { entry.dc.send(payload); sent += 1; } catch (_) { /* channel closing */ }
      }
    }
    addChat('You', text, true, sent === 0);
    input.value = '';
    input.focus();
  }

  function addChat(who, text, mine, undelivered) {
    const item = document.createElement('p');
    item.className = mine ? 'chat-msg mine' : 'chat-msg';
    const name = document.createElement('strong');
    name.textContent = who + ': ';
    const body = document.createElement('span');
    body.textContent = text; // never innerHTML: this is someone's typing
    item.append(name, body);
    if (undelivered) {
      const note = document.createElement('em');
      note.textContent = ' (not delivered: no one else is connected yet)';
      item.append(note);
    }
    $('chat-log').append(item);
    item.scrollIntoView({ block: 'nearest' });
    if (!mine && $('chat-panel').hidden) { app.unread += 1; updateChatButton(); }
  }

  // ------------------------------------------------------------------ start
  function wire() {
    const on = (id, type, fn) => $(id).addEventListener(type, fn);
    on('join-form', 'submit', onJoinSubmit);
    on('network-retry', 'click', startNetworkCheck);
    on('media-retry', 'click', () => { app.mediaReady = startMedia(); });
    on('camera-select', 'change', () => switchDevice('video'));
    on('mic-select', 'change', () => switchDevice('audio'));
    on('mute-button', 'click', () => toggle('audio'));
    on('camera-button', 'click', () => toggle('video'));
    on('chat-button', 'click', toggleChat);
    on('chat-form', 'submit', sendChat);
    on('leave-button', 'click', leave);
    on('waiting-leave-button', 'click', leave);
    on('notice-button', 'click', () => { if (app.noticeAction) app.noticeAction(); });
    on('sound-button', 'click', () => {
      for (const entry of app.peers.values()) entry.video.play().catch(noop);
      $('sound-button').hidden = true;
    });
    // Browsers start audio only after a click or key press: wake the level meter then.
    document.addEventListener('pointerdown', resumeAudio);
    document.addEventListener('keydown', resumeAudio);
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener('devicechange', () => { if (app.local) listDevices(); });
    }
    window.addEventListener('online', () => { if (app.joined && !app.ws && !app.terminal) reconnectNow(); });
    window.addEventListener('hashchange', () => { if (location.hash.length > 1) reload(); }); // a new link
  }

  function start() {
    wire();
    app.token = takeToken();
    if (!app.token) {
      return showNotice('error', "We can't open your visit",
        "This link is incomplete. Please open the whole link from your clinic's message, or contact your clinic.", null);
    }
    return checkLink();
  }

  start();
})();
