// Test peer for Hearth's sign-on tests (run by hearth-testkit, never shipped).
//
// 1. A SMART App Launch 2.2 authorization server: the certified `oidc-provider` library, with a
//    public native client `hearth` and a patient-facing app `patient-app` (PKCE S256 required, loopback redirects on any port, refresh
//    token rotation, revocation), SMART v2 scopes, the `fhirUser` claim, and launch context
//    (patient, encounter) in the token response for an EHR launch.
//    Access tokens are JWTs signed with the provider's key (as many identity providers issue),
//    so a resource server such as Hearth's visit service can check them with the JWKS; each
//    wraps the provider's own opaque token (its `jti`), so revocation and introspection still
//    work through the provider.
//    Resource indicators (RFC 8707): a client may ask for a token for another resource server
//    than the FHIR base (any absolute URL but the FHIR base, e.g. Hearth's visit service) with
//    `resource` in its authorization request and again in a token request (code or refresh
//    grant); such a token is for that audience alone (its `aud`) and carries at most `openid
//    fhirUser`. A token asked for without `resource` is for the FHIR base.
//    SMART Backend Services: the confidential client `hearth-visit` (the visit service) gets
//    `system/...` tokens with the client_credentials grant, authenticating with a JWT signed by
//    its own key (private_key_jwt, RFC 7523); its public JWK comes from VISIT_CLIENT_JWK.
// 2. A gateway in front of the FHIR server: every FHIR request needs a bearer token that the
//    authorization server's introspection endpoint (RFC 7662) calls active and that is for
//    the FHIR base (not a token for another resource server); it also serves
//    `<fhir-base>/.well-known/smart-configuration`.
//
// Settings come from the environment: OIDC_PORT, GATEWAY_PORT (or GATEWAY_FD: a listening
// socket the test harness bound and handed over, so that no other process can take the port
// between its choice and this listen), UPSTREAM (the FHIR server's
// origin), USER_* (the one clinician who can sign in), PATIENT_* (the one patient who can sign
// in, whose `fhirUser` is a Patient), ACCESS_TOKEN_TTL (seconds), VISIT_CLIENT_JWK (the visit
// service's public key as a JWK in JSON; no `hearth-visit` client without it).
// When ready it prints one JSON line: {"issuer": ..., "fhir_base": ...}.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import * as jose from 'jose';

const env = (name, fallback) => process.env[name] ?? fallback;
const OIDC_PORT = Number(env('OIDC_PORT', '0'));
const GATEWAY_PORT = Number(env('GATEWAY_PORT', '0'));
const UPSTREAM = new URL(env('UPSTREAM', 'http://127.0.0.1:8080'));
const ACCESS_TOKEN_TTL = Number(env('ACCESS_TOKEN_TTL', '3600'));
const USER = {
  username: env('USER_NAME', 'mokafor'),
  password: env('USER_PASSWORD', 'hearth-test-password'),
  sub: env('USER_SUB', 'mokafor'),
  name: env('USER_DISPLAY', 'Dr. Mara Okafor'),
  fhirUser: env('USER_FHIR', 'Practitioner/hearth-dr-okafor'),
};
const PATIENT = {
  username: env('PATIENT_NAME', 'apatient'),
  password: env('PATIENT_PASSWORD', 'hearth-patient-password'),
  sub: env('PATIENT_SUB', 'patient-9'),
  name: env('PATIENT_DISPLAY', 'Ana Patient'),
  fhirUser: env('PATIENT_FHIR', 'Patient/9'),
};
const ACCOUNTS = [USER, PATIENT];
const GATEWAY_SECRET = crypto.randomBytes(24).toString('hex');
const VISIT_CLIENT_JWK = process.env.VISIT_CLIENT_JWK ? JSON.parse(process.env.VISIT_CLIENT_JWK) : null;

const oidcServer = http.createServer();
await new Promise((ok) => oidcServer.listen(OIDC_PORT, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${oidcServer.address().port}`;
const gatewayServer = http.createServer();
await new Promise((ok) =>
  process.env.GATEWAY_FD
    ? gatewayServer.listen({ fd: Number(process.env.GATEWAY_FD) }, ok)
    : gatewayServer.listen(GATEWAY_PORT, '127.0.0.1', ok));
const fhirBase = `http://127.0.0.1:${gatewayServer.address().port}/fhir`;

// The signing key, made at start (never a development key shipped in a package).
// Exported to JWK inside the generation itself: exporting the KeyObject afterwards was seen to
// deadlock Node.js 20 (a GC during the export ran the finished key-generation job's destructor,
// which waits on the lock the export holds), leaving the peer silent before its ready line.
const { privateKey: privateJwk } = crypto.generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { format: 'jwk' },
  privateKeyEncoding: { format: 'jwk' },
});
const signingJwk = { ...privateJwk, kid: 'hearth-test-1', alg: 'RS256', use: 'sig' };

const SMART_SCOPES = [
  'openid', 'fhirUser', 'profile', 'offline_access', 'launch', 'launch/patient', 'launch/encounter',
  'user/*.rs', 'user/*.cruds', 'user/*.cud', 'user/*.read', 'patient/*.rs', 'patient/*.read',
  'system/Appointment.rs',
];
// What a token for a resource server other than the FHIR base may carry: who the user is.
const OTHER_RESOURCE_SCOPES = 'openid fhirUser';

// launch id -> { patient, encounter } (registered by a test), grant id -> context.
const launches = new Map();
const grantContext = new Map();
// One-shot faults a test asks for: how to spoil the next ID token.
let spoilNextIdToken = null;
// How to spoil the next access token (`typ`, `not-yet`, `future-iat`), re-signed with the real key.
let spoilNextAccessToken = null;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'hearth',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
    },
    {
      // A patient-facing app of the same organisation: its tokens are for the same FHIR base.
      client_id: 'patient-app',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
    },
    {
      // The gateway asks about tokens through introspection, as a resource server would.
      client_id: 'fhir-gateway',
      client_secret: GATEWAY_SECRET,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    // The visit service reads appointments as itself (SMART Backend Services).
    ...(VISIT_CLIENT_JWK ? [{
      client_id: 'hearth-visit',
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [VISIT_CLIENT_JWK] },
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'system/Appointment.rs',
    }] : []),
  ],
  enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'] },
  jwks: { keys: [signingJwk] },
  scopes: SMART_SCOPES,
  claims: { openid: ['sub'], fhirUser: ['fhirUser'], profile: ['name'] },
  conformIdTokenClaims: false,
  extraParams: ['aud', 'launch'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No `resource`: the token is for the FHIR base (as before resource indicators).
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, indicator) => {
        if (indicator === fhirBase) {
          return { scope: SMART_SCOPES.join(' '), audience: fhirBase, accessTokenFormat: 'opaque' };
        }
        const url = URL.parse(indicator);
        if (!url || !['http:', 'https:'].includes(url.protocol)) throw new errors.InvalidTarget();
        return { scope: OTHER_RESOURCE_SCOPES, audience: indicator, accessTokenFormat: 'opaque' };
      },
    },
  },
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 14 * 24 * 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, id) => {
    const account = ACCOUNTS.find((a) => a.sub === id);
    return account ? {
      accountId: id,
      claims: async () => ({ sub: account.sub, name: account.name, fhirUser: account.fhirUser }),
    } : undefined;
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Sign-in error</title><h1>${escapeHtml(out.error)}</h1><p>${escapeHtml(out.error_description ?? '')}</p>`;
  },
});
provider.proxy = false;

// SMART: `aud` must name the FHIR server this authorization server protects; offline_access
// yields a refresh token without asking for a consent screen each time (the organisation
// approved the app).
provider.use(async (ctx, next) => {
  if (ctx.path === '/auth') {
    const q = { ...ctx.query };
    if (q.aud !== fhirBase) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Sign-in error</title><h1>invalid_request</h1><p>aud must be ${escapeHtml(fhirBase)}</p>`;
      return;
    }
    const scope = String(q.scope ?? '').split(' ');
    const prompt = new Set(String(q.prompt ?? '').split(' ').filter(Boolean));
    if (scope.includes('offline_access') && !prompt.has('consent')) {
      prompt.add('consent');
      q.prompt = [...prompt].join(' ');
      ctx.query = q;
    }
  }
  await next();
  if (ctx.oidc?.route === 'token' && ctx.status === 200 && ctx.body?.access_token) {
    const grantId = ctx.oidc.entities.Grant?.jti;
    const context = grantId ? grantContext.get(grantId) : undefined;
    if (context) {
      if (context.patient) ctx.body.patient = context.patient;
      if (context.encounter) ctx.body.encounter = context.encounter;
      ctx.body.need_patient_banner = false;
    }
    ctx.body.access_token = await wrapAccessToken(ctx.body.access_token);
    if (ctx.body.id_token && spoilNextIdToken) {
      ctx.body.id_token = await spoil(ctx.body.id_token, spoilNextIdToken);
      spoilNextIdToken = null;
    }
  }
});

// The access token a client sees: a JWT over the provider's opaque token, for the token's
// resource server (`aud`; the FHIR base when none was asked for). A client's own token
// (client_credentials) names the client as its subject and no user.
async function wrapAccessToken(opaque) {
  const token = (await provider.AccessToken.find(opaque)) ?? (await provider.ClientCredentials.find(opaque));
  if (!token) return opaque;
  const account = token.accountId ? ACCOUNTS.find((a) => a.sub === token.accountId) : undefined;
  if (token.accountId && !account) return opaque;
  const key = await jose.importJWK(signingJwk, 'RS256');
  const how = spoilNextAccessToken;
  spoilNextAccessToken = null;
  const now = Math.floor(Date.now() / 1000);
  const jwt = new jose.SignJWT({
    client_id: token.clientId, scope: token.scope, fhirUser: account?.fhirUser, name: account?.name,
  })
    .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: how === 'typ' ? 'JWT' : 'at+jwt' })
    .setIssuer(issuer).setSubject(token.accountId ?? token.clientId).setAudience(token.aud ?? fhirBase)
    .setIssuedAt(how === 'future-iat' ? now + 3600 : token.iat).setExpirationTime(token.exp + (how === 'future-iat' ? 7200 : 0)).setJti(opaque);
  if (how === 'not-yet') jwt.setNotBefore(now + 3600);
  return jwt.sign(key);
}

// The provider's opaque token inside one of our JWT access tokens (null if it is not one).
async function unwrapAccessToken(token) {
  if (!token || token.split('.').length !== 3) return null;
  try {
    const { d, p, q, dp, dq, qi, ...publicJwk } = signingJwk;
    const key = await jose.importJWK(publicJwk, 'RS256');
    const { payload } = await jose.jwtVerify(token, key, { issuer });
    return payload.jti ?? null;
  } catch {
    return null;
  }
}

// Revocation and introspection of a JWT access token act on the opaque token it wraps.
async function tokenEndpointWithJwt(req, res, path) {
  const body = await readBody(req);
  const form = new URLSearchParams(body);
  const opaque = await unwrapAccessToken(form.get('token'));
  if (opaque) form.set('token', opaque);
  const headers = { 'content-type': 'application/x-www-form-urlencoded', 'x-hearth-unwrapped': '1' };
  if (req.headers.authorization) headers.authorization = req.headers.authorization;
  const r = await fetch(`${issuer}${path}`, { method: 'POST', headers, body: form });
  res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' });
  res.end(Buffer.from(await r.arrayBuffer()));
}

async function spoil(idToken, how) {
  const [h, p, s] = idToken.split('.');
  if (how === 'signature') {
    const sig = Buffer.from(s, 'base64url');
    sig[0] ^= 0xff;
    return `${h}.${p}.${sig.toString('base64url')}`;
  }
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  if (how === 'audience') claims.aud = 'someone-else';
  if (how === 'expired') { claims.iat -= 7200; claims.exp = Math.floor(Date.now() / 1000) - 3600; }
  if (how === 'issuer') claims.iss = 'http://127.0.0.1:1/not-the-issuer';
  const key = await jose.importJWK(signingJwk, 'RS256');
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'JWT' }).sign(key);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString();
}

function loginPage(uid, message) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><main><h1>Sign in to the clinic</h1>${message ? `<p role="alert" id="error">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label for="username">User name</label> <input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password">
<button id="submit" type="submit">Sign in</button></form></main></body></html>`;
}

// Our interactions: a plain login form; consent is granted for what the client asked (the
// organisation approved Hearth), and an EHR launch's context is tied to the grant.
async function interaction(req, res) {
  const url = new URL(req.url, issuer);
  const parts = url.pathname.split('/').filter(Boolean); // ['interaction', uid, ('login')]
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      if (parts[2] === 'login' && req.method === 'POST') {
        const form = new URLSearchParams(await readBody(req));
        const account = ACCOUNTS.find((a) => a.username === form.get('username') && a.password === form.get('password'));
        if (account) {
          await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
          return;
        }
        res.writeHead(401, { 'content-type': 'text/html' });
        res.end(loginPage(details.uid, 'Wrong user name or password.'));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(loginPage(details.uid));
      return;
    }
    if (details.prompt.name === 'consent') {
      const { params, session, prompt } = details;
      let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
      if (!grant) grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const missing = prompt.details.missingOIDCScope ?? [];
      if (missing.length) grant.addOIDCScope(missing.join(' '));
      if (prompt.details.missingOIDCClaims?.length) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      if (params.launch) {
        const context = launches.get(params.launch);
        if (!context) {
          await provider.interactionFinished(req, res, { error: 'invalid_request', error_description: 'unknown launch' }, { mergeWithLastSubmission: false });
          return;
        }
        grantContext.set(grantId, context);
      } else {
        grantContext.delete(grantId);
      }
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`unexpected prompt ${details.prompt.name}`);
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${err.message}`);
  }
}

// Test controls, loopback only: register a launch, spoil the next ID or access token.
async function control(req, res) {
  const url = new URL(req.url, issuer);
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  const reply = (status, obj) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(obj)); };
  if (url.pathname === '/_test/launch' && req.method === 'POST') {
    const launch = crypto.randomBytes(12).toString('base64url');
    launches.set(launch, { patient: body.patient, encounter: body.encounter });
    return reply(200, { launch });
  }
  if (url.pathname === '/_test/spoil-next-id-token' && req.method === 'POST') {
    spoilNextIdToken = body.how;
    return reply(200, { ok: true });
  }
  if (url.pathname === '/_test/spoil-next-access-token' && req.method === 'POST') {
    spoilNextAccessToken = body.how;
    return reply(200, { ok: true });
  }
  return reply(404, { error: 'no such control' });
}

const providerCallback = provider.callback();
oidcServer.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) return void interaction(req, res);
  if (req.url.startsWith('/_test/')) return void control(req, res);
  for (const path of ['/token/revocation', '/token/introspection']) {
    if (req.method === 'POST' && req.url === path && !req.headers['x-hearth-unwrapped']) {
      return void tokenEndpointWithJwt(req, res, path).catch((e) => { res.writeHead(500); res.end(String(e)); });
    }
  }
  return providerCallback(req, res);
});

// ---- The gateway: SMART discovery, and tokens checked by introspection before any FHIR call.
async function introspect(token) {
  const r = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`fhir-gateway:${GATEWAY_SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token: (await unwrapAccessToken(token)) ?? token, token_type_hint: 'access_token' }),
  });
  return r.ok ? r.json() : { active: false };
}

function outcome(res, status, code, text, extraHeaders = {}) {
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...extraHeaders });
  res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] }));
}

gatewayServer.on('request', async (req, res) => {
  const url = new URL(req.url, fhirBase);
  if (url.pathname === '/fhir/.well-known/smart-configuration') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      issuer,
      jwks_uri: `${issuer}/jwks`,
      authorization_endpoint: `${issuer}/auth`,
      token_endpoint: `${issuer}/token`,
      revocation_endpoint: `${issuer}/token/revocation`,
      introspection_endpoint: `${issuer}/token/introspection`,
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types_supported: ['code'],
      scopes_supported: SMART_SCOPES,
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      capabilities: [
        'launch-ehr', 'launch-standalone', 'client-public', 'context-ehr-patient',
        'context-ehr-encounter', 'permission-offline', 'permission-v2', 'sso-openid-connect',
        'client-confidential-asymmetric',
      ],
    }));
    return;
  }
  if (!url.pathname.startsWith('/fhir')) return outcome(res, 404, 'not-found', 'not a FHIR path');
  const open = url.pathname === '/fhir/metadata';
  if (!open) {
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    const challenge = { 'www-authenticate': 'Bearer realm="fhir", error="invalid_token"' };
    if (!token) return outcome(res, 401, 'login', 'a bearer token is required', challenge);
    let info;
    try { info = await introspect(token); } catch { info = { active: false }; }
    if (!info.active) return outcome(res, 401, 'login', 'the access token is not active', challenge);
    // A token for another resource server (e.g. the visit service's) is not for the chart.
    const aud = [info.aud ?? fhirBase].flat();
    if (!aud.includes(fhirBase)) return outcome(res, 401, 'login', 'the access token is not for this FHIR server', challenge);
  }
  const upstream = http.request({
    host: UPSTREAM.hostname, port: UPSTREAM.port, method: req.method, path: req.url,
    headers: { ...req.headers, host: `${UPSTREAM.hostname}:${UPSTREAM.port}` },
  }, (up) => { res.writeHead(up.statusCode, up.headers); up.pipe(res); });
  upstream.on('error', () => { if (!res.headersSent) outcome(res, 502, 'transient', 'the FHIR server did not answer'); else res.destroy(); });
  res.on('error', () => upstream.destroy());
  req.pipe(upstream);
});

// A client that goes away mid-answer (a test that got what it needed) is not the peer's
// failure: say so on stderr and go on serving.
for (const server of [oidcServer, gatewayServer]) {
  server.on('connection', (socket) => socket.on('error', (e) => process.stderr.write(`socket: ${e.message}\n`)));
  server.on('clientError', (e, socket) => { process.stderr.write(`client: ${e.message}\n`); socket.destroy(); });
}

process.stdout.write(`${JSON.stringify({ issuer, fhir_base: fhirBase })}\n`);
